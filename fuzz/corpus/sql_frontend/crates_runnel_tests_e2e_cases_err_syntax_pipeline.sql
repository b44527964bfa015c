CREATE TABLE t (a INT) WITH (connector = 'file', path = 'x');
INSERT INTO t SELEC a FROM t;
