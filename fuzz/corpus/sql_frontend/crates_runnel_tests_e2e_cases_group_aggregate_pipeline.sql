-- A non-window GROUP BY (issue 15): an updating result, one row per key in the end.
-- Small batches make every row an update of the row before.
SET 'execution.batch-size' = '1';
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, n BIGINT, s BIGINT, mn BIGINT, mx BIGINT, a DOUBLE, d BIGINT, pos BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, COUNT(*), SUM(v), MIN(v), MAX(v), AVG(v), COUNT(DISTINCT v), COUNT(*) FILTER (WHERE v > 0)
FROM t GROUP BY k;
