-- LAG in OVER (Flink's form): each row with the value one and two rows before it in
-- its partition, by event time (the out-of-order row takes its place in time), and the
-- change since the previous row; a default where there is no such row.
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, v BIGINT, prev BIGINT, prev2 BIGINT, delta BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, v, LAG(v) OVER w, LAG(v, 2, -1) OVER w, v - LAG(v) OVER w
FROM t WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW);
