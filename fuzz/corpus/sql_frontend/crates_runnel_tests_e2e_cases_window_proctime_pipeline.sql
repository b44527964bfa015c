-- Processing-time windows over PROCTIME() (Nexmark q12's shape): windows close by the
-- wall clock, and all at once when a bounded input ends. A one-day window holds every
-- row of this short run.
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (connector = 'file', path = 'input.jsonl');
CREATE VIEW B AS SELECT *, PROCTIME() AS p_time FROM t;
CREATE TABLE output (k STRING, n BIGINT, hours INT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, COUNT(*), TIMESTAMPDIFF(HOUR, window_start, window_end)
FROM TABLE(TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '1' DAY))
GROUP BY k, window_start, window_end;
