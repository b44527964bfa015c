-- Arrays of ROWs (as detect() returns them) spread into columns, counted per
-- label in event-time windows.
CREATE TABLE frames (
  cam STRING,
  objects ARRAY<ROW<label STRING, score DOUBLE>>,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (window_start TIMESTAMP(3), label STRING, objects BIGINT, best DOUBLE)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT window_start, d.label, COUNT(*), MAX(d.score)
FROM TABLE(TUMBLE(TABLE frames, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  CROSS JOIN UNNEST(objects) AS d (label, score)
WHERE d.score >= 0.5
GROUP BY window_start, window_end, d.label;
