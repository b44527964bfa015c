-- CAST to Flink's nested types in a query: ROW<…> and ARRAY<ROW<…>> (`>>` closing two).
CREATE TABLE t (k STRING, n BIGINT) WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (k STRING, r ROW<n BIGINT>, objects ARRAY<ROW<label STRING, score DOUBLE>>, nums ARRAY<BIGINT>)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT k, CAST(NULL AS ROW<n BIGINT>), CAST(NULL AS ARRAY<ROW<label STRING, score DOUBLE>>),
       CAST(NULL AS ARRAY<BIGINT>)
FROM t WHERE n > 1;
