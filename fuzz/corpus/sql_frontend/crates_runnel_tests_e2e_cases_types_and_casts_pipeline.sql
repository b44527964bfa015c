CREATE TABLE t (b BOOLEAN, i INT, big BIGINT, f FLOAT, d DOUBLE, dec DECIMAL(10, 2), s VARCHAR, bytes BYTES,
  ts TIMESTAMP(3), ltz TIMESTAMP_LTZ(3))
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (b BOOLEAN, i BIGINT, big STRING, f DOUBLE, d DOUBLE, dec DECIMAL(10, 2), s STRING, n INT,
  bytes VARBINARY, ts TIMESTAMP(3), ltz TIMESTAMP_LTZ(3), i_plus DOUBLE)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT b, i, CAST(big AS STRING), f, d * 2, dec, CONCAT(s, '!'), CAST(LENGTH(s) AS INT), bytes, ts, ltz, i + 0.5 FROM t;
