-- OVER aggregates in event time (issue 15): each row with statistics of the rows
-- before it — the last 3 rows, and the last 2 seconds (rows of equal time are peers).
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, v BIGINT, kind STRING, n BIGINT, s BIGINT, mx BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, v, 'rows', COUNT(*) OVER w, SUM(v) OVER w, MAX(v) OVER w
FROM t WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW);
INSERT INTO output
SELECT k, v, 'range', COUNT(*) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW),
  SUM(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW),
  MAX(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW)
FROM t;
