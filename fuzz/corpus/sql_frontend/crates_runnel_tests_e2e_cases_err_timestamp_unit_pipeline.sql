CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector='file', path='input.jsonl');
CREATE TABLE output (k STRING, n BIGINT) WITH (connector='file', path='output.jsonl');
INSERT INTO output SELECT k, TIMESTAMPDIFF(FORTNIGHT, ts, ts) FROM t;
