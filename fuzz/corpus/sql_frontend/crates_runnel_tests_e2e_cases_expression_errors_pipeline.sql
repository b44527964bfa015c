-- Non-strict evaluation (issue 16): a row whose expression fails — a division by zero,
-- a CAST that overflows — is dead-lettered with the expression, the error and its
-- values, and every other row goes on. Both queries read the same rows.
SET 'dead-letter.path' = 'rejects.jsonl';
CREATE TABLE t (k STRING, x BIGINT, y BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, q BIGINT, small TINYINT) WITH (connector = 'file', path = 'output.jsonl');
CREATE TABLE sums (k STRING, s BIGINT) WITH (connector = 'file', path = 'sums.jsonl');
INSERT INTO output SELECT k, x / y, CAST(x AS TINYINT) FROM t WHERE x / y > 0;
INSERT INTO sums SELECT k, SUM(x / y) FROM t GROUP BY k;
