-- LAG outside OVER has no row order to look back in: a one-line error saying where it belongs.
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, prev BIGINT) WITH (connector = 'blackhole');
INSERT INTO output SELECT k, LAG(v) FROM t GROUP BY k;
