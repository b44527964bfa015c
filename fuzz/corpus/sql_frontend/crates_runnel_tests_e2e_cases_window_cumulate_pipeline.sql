-- CUMULATE: windows of 1, 2, 3 … 3 seconds from each 3-second boundary (Flink's
-- cumulating window TVF).
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector='file', path='input.jsonl');
CREATE TABLE output (k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, s BIGINT) WITH (connector='file', path='output.jsonl');
INSERT INTO output SELECT k, window_start, window_end, COUNT(*), SUM(v)
FROM TABLE(CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '3' SECOND)) GROUP BY k, window_start, window_end;
