CREATE TABLE t (a INT) WITH (connector = 'file', path = 'x');
CREATE TABLE o (a INT) WITH (connector = 'nexmark', stream = 'bid');
INSERT INTO o SELECT a FROM t;
