CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector='file', path='input.jsonl');
CREATE TABLE output (k STRING, n BIGINT) WITH (connector='file', path='output.jsonl');
INSERT INTO output SELECT k, COUNT(*) FROM TABLE(CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
