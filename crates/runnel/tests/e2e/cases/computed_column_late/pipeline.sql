-- A watermark on a computed column holds event time like one on a declared column:
-- the last row is late for its window and is dropped.
SET 'execution.batch-size' = '1';
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
