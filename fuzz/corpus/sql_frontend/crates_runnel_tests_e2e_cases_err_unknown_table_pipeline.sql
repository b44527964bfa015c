CREATE TABLE o (a INT) WITH (connector = 'blackhole');
INSERT INTO o SELECT a FROM nope;
