SET 'execution.batch-size' = '5';
CREATE TABLE events (k STRING, v BIGINT, ts TIMESTAMP(3), u STRING,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, window_start TIMESTAMP(3), num BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
CREATE VIEW hop_counts AS
SELECT k, window_start, window_end, COUNT(*) AS num
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
GROUP BY k, window_start, window_end;
CREATE VIEW max_counts AS
SELECT window_start, window_end, MAX(num) AS maxn FROM hop_counts GROUP BY window_start, window_end;
INSERT INTO output
SELECT h.k, h.window_start, h.num
FROM hop_counts h JOIN max_counts m
  ON h.window_start = m.window_start AND h.window_end = m.window_end AND h.num >= m.maxn;
