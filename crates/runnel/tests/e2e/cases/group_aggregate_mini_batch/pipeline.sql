-- A non-window GROUP BY with Flink's mini-batch: the same final rows, fewer updates on the way.
SET 'table.exec.mini-batch.enabled' = 'true';
SET 'table.exec.mini-batch.allow-latency' = '5 s';
SET 'table.exec.mini-batch.size' = '4';
SET 'execution.batch-size' = '1';
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, n BIGINT, s BIGINT, mn BIGINT, mx BIGINT, a DOUBLE, d BIGINT, pos BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, COUNT(*), SUM(v), MIN(v), MAX(v), AVG(v), COUNT(DISTINCT v), COUNT(*) FILTER (WHERE v > 0)
FROM t GROUP BY k;
