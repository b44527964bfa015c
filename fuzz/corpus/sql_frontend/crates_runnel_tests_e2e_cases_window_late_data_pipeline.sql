SET 'execution.batch-size' = '1';
-- ts 09.5 arrives after 12 (watermark 10 - 3 = 9 s): still in time for [0, 10).
-- ts 02 arrives after 25 (watermark 22 s): window [0, 10) already fired -> late, dropped and counted.
-- ts 15 arrives after 25: window [10, 20) already fired (22 >= 19.999) -> late too.
CREATE TABLE events (k STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, window_start TIMESTAMP(3), cnt BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
