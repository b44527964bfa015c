CREATE TABLE t (a INT) WITH (connector = 'file', path = 'x');
CREATE TABLE o (a INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT b FROM t;
