-- Nexmark q13, bounded side input join: each bid enriched with the value its auction
-- (mod 10000) has in a side table, looked up at processing time (a lookup join). The
-- bench writes the side table, rows `i,i` for i in 0..10000, as Nexmark's
-- SideInputGenerator does, into its scratch directory (${SCRATCH_DIR}).
CREATE TABLE side_input (key BIGINT, `value` STRING)
WITH ('connector' = 'filesystem', 'path' = '${SCRATCH_DIR}/side_input.txt', 'format' = 'csv');
CREATE TABLE nexmark_q13 (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), `value` STRING)
WITH (connector = 'blackhole');
INSERT INTO nexmark_q13
SELECT B.auction, B.bidder, B.price, B.date_time, S.`value`
FROM bid_p B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S
ON mod(B.auction, 10000) = S.key;
