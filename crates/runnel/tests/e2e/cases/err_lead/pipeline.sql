-- LEAD looks at rows that have not arrived: a one-line error saying so.
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, v BIGINT, nxt BIGINT) WITH (connector = 'blackhole');
INSERT INTO output SELECT k, v, LEAD(v) OVER (PARTITION BY k ORDER BY ts) FROM t;
