-- Flink's legacy group windows (Nexmark q11's shape): GROUP BY TUMBLE(…) / SESSION(…)
-- with TUMBLE_START / SESSION_END, planned as the window table functions.
CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector='file', path='input.jsonl');
CREATE TABLE output (k STRING, n BIGINT, s TIMESTAMP(3), e TIMESTAMP(3), kind STRING) WITH (connector='file', path='output.jsonl');
INSERT INTO output
SELECT T.k, COUNT(*), TUMBLE_START(T.ts, INTERVAL '10' SECOND), TUMBLE_END(T.ts, INTERVAL '10' SECOND), 'tumble'
FROM t T GROUP BY TUMBLE(T.ts, INTERVAL '10' SECOND), T.k;
INSERT INTO output
SELECT B.k, count(*) AS n, SESSION_START(B.ts, INTERVAL '2' SECOND) AS s, SESSION_END(B.ts, INTERVAL '2' SECOND) AS e, 'session'
FROM t B GROUP BY B.k, SESSION(B.ts, INTERVAL '2' SECOND);
