CREATE TABLE t (a INT) WITH (connector = 'filez', path = 'x');
CREATE TABLE o (a INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT a FROM t;
