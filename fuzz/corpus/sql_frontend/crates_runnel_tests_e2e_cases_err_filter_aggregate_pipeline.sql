-- Aggregate FILTER (WHERE …) in a window aggregate (issue 15): rows failing the
-- condition count for nothing.
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, n BIGINT, pos BIGINT, s BIGINT, mx BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, COUNT(*), COUNT(*) FILTER (WHERE v > 0), SUM(v) FILTER (WHERE v > 1), LAST_VALUE(v) FILTER (WHERE v < 3)
FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
