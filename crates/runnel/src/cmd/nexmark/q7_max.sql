-- Only the maximum price per 10 s window: the simplified "q7" of earlier benchmarks
-- (not Nexmark's q7, which joins the bids back; see q7.sql).
CREATE TABLE nexmark_q7_max (window_start TIMESTAMP(3), window_end TIMESTAMP(3), top BIGINT) WITH (connector = 'blackhole');
INSERT INTO nexmark_q7_max
SELECT window_start, window_end, MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
