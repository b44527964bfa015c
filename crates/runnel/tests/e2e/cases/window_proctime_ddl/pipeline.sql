-- Processing-time windows over a PROCTIME() computed column declared in the DDL, as
-- Flink scripts write it (`p_time AS PROCTIME()`).
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), p_time AS PROCTIME(), WATERMARK FOR ts AS ts) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, n BIGINT, hours INT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, COUNT(*), TIMESTAMPDIFF(HOUR, window_start, window_end)
FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(p_time), INTERVAL '1' DAY))
GROUP BY k, window_start, window_end;
