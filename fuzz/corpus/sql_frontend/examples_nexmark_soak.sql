-- Unbounded Nexmark bids, tumbling 10 s aggregates per auction: runs until Ctrl-C (memory soak).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'nexmark', stream = 'bid', rate = '300000');
CREATE TABLE out (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), num BIGINT, total BIGINT, top BIGINT)
WITH (connector = 'blackhole');
INSERT INTO out SELECT auction, window_start, window_end, COUNT(*), SUM(price), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;
