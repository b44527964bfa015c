-- 'pipeline.on-error' = 'fail' keeps strict evaluation: the first failing row stops
-- the pipeline, naming the expression.
SET 'pipeline.on-error' = 'fail';
CREATE TABLE t (k STRING, x BIGINT, y BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, q BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT k, x / y FROM t;
