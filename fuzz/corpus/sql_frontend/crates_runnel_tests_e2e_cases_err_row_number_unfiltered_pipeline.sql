CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, rn BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) FROM t;
