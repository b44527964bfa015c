CREATE TABLE t (a INT) WITH (connector = 'file', path = 'does-not-exist.jsonl');
CREATE TABLE o (a INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT a FROM t;
