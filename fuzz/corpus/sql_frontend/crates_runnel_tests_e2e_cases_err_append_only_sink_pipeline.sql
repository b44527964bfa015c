CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, n BIGINT) WITH (connector = 'file', path = 'output.csv', format = 'csv');
INSERT INTO output SELECT k, COUNT(*) FROM t GROUP BY k;
