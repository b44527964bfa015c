CREATE TABLE t (a BOOLEAN, s STRING) WITH (connector = 'file', path = 'x');
CREATE TABLE o (a INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT 1 FROM t WHERE s;
