SET 'execution.batch-size' = '5';
CREATE TABLE events (k STRING, v BIGINT, ts TIMESTAMP(3), u STRING,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT, total BIGINT,
  lo BIGINT, hi BIGINT, avg DOUBLE, du BIGINT, first_v BIGINT, last_v BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, window_start, window_end, COUNT(*), SUM(v), MIN(v), MAX(v), AVG(CAST(v AS DOUBLE)), COUNT(DISTINCT u),
       FIRST_VALUE(v), LAST_VALUE(v)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
