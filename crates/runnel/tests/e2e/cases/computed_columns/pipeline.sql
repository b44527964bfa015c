-- Computed columns (Flink's `name AS expr`) with the watermark on one of them: the
-- source computes event time from epoch seconds; COMMENT is accepted.
CREATE TABLE readings (
  sensor STRING COMMENT 'which sensor',
  epoch BIGINT,
  ts AS TO_TIMESTAMP(FROM_UNIXTIME(epoch)),
  temp_f DOUBLE,
  temp_c AS (temp_f - 32) * 5 / 9 COMMENT 'Celsius',
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (sensor STRING, window_start TIMESTAMP(3), n BIGINT, avg_c DOUBLE)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT sensor, window_start, COUNT(*), AVG(temp_c)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY sensor, window_start, window_end;
