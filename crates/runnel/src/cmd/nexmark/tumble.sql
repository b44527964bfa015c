-- Count, sum and maximum of the bids per auction per 10 s tumbling window (not a
-- Nexmark query: the window aggregate of runnel's first benchmarks).
CREATE TABLE nexmark_tumble (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), num BIGINT, total BIGINT, top BIGINT)
WITH (connector = 'blackhole');
INSERT INTO nexmark_tumble
SELECT auction, window_start, window_end, COUNT(*), SUM(price), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
