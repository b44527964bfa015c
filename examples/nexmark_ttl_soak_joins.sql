-- Unbounded Nexmark bids through the stateful updating operators, with their state
-- bounded by table.exec.state.ttl: runs until Ctrl-C (memory soak of the unbounded joins q9 and q20, issue 15).
SET 'table.exec.state.ttl' = '30 s';
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'nexmark', stream = 'bid', rate = '100000');
CREATE TABLE auction (id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
  date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'nexmark', stream = 'auction', rate = '100000');
CREATE TABLE winners (id BIGINT, category BIGINT, price BIGINT, bidder BIGINT) WITH (connector = 'blackhole');
CREATE TABLE bids_cat10 (auction BIGINT, bidder BIGINT, price BIGINT, item_name STRING, category BIGINT)
WITH (connector = 'blackhole');
-- q9: each auction's winning bid (join in the auction's lifetime, then ROW_NUMBER top-1).
INSERT INTO winners SELECT id, category, price, bidder FROM (
  SELECT A.id, A.category, B.price, B.bidder,
    ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rn
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires)
WHERE rn <= 1;
-- q20: bids joined with their auction, category 10 (a regular join).
INSERT INTO bids_cat10 SELECT B.auction, B.bidder, B.price, A.item_name, A.category
FROM bid B JOIN auction A ON B.auction = A.id WHERE A.category = 10;
