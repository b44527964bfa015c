-- GROUP BY an expression (Nexmark q15's DATE_FORMAT day) over an unbounded stream.
SET 'execution.batch-size' = '2';
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (`day` STRING, n BIGINT, bidders BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT DATE_FORMAT(ts, 'yyyy-MM-dd') AS `day`, COUNT(*), COUNT(DISTINCT k) FROM t
GROUP BY DATE_FORMAT(ts, 'yyyy-MM-dd');
