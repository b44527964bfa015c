-- A computed column over a column the table does not have: a one-line error naming it.
CREATE TABLE readings (sensor STRING, epoch BIGINT, bad AS nosuch + 1)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE o (sensor STRING) WITH (connector = 'blackhole');
INSERT INTO o SELECT sensor FROM readings;
