CREATE TABLE t (a INT) WITH (connector = 'file', path = 'x');
CREATE TABLE o (x INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT u.x FROM t CROSS JOIN UNNEST(t.a) AS u (x);
