SET 'execution.batch-size' = '5';
CREATE TABLE events (k STRING, v BIGINT, ts TIMESTAMP(3), u STRING,
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
CREATE VIEW counts AS
SELECT k, window_start, window_end, COUNT(*) AS cnt
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
GROUP BY k, window_start, window_end;
INSERT INTO output SELECT k, window_start, window_end, cnt FROM counts WHERE cnt >= 2;
