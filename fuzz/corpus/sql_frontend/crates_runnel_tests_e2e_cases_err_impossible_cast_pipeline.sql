CREATE TABLE t (a BYTES) WITH (connector = 'file', path = 'x');
CREATE TABLE o (a BIGINT) WITH (connector = 'blackhole');
INSERT INTO o SELECT a FROM t;
