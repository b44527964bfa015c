CREATE TABLE t (a INT, b INT) WITH (connector = 'file', path = 'x');
CREATE TABLE o (a INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT a, b FROM t;
