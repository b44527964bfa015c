SET 'execution.batch-size' = '5';
CREATE TABLE events (k STRING, v BIGINT, ts TIMESTAMP(3), u STRING,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT, total BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, window_start, window_end, COUNT(*), SUM(v)
FROM TABLE(SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND))
GROUP BY k, window_start, window_end;
