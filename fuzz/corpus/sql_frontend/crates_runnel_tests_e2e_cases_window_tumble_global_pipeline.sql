SET 'execution.batch-size' = '5';
CREATE TABLE events (k STRING, v BIGINT, ts TIMESTAMP(3), u STRING,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (window_start TIMESTAMP(3), window_end TIMESTAMP(3), top BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT window_start, window_end, MAX(v) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
