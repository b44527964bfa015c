-- Nexmark q4's shape: the average winning price per category, an aggregate over the
-- updating result of another (MAX over a join), so AVG must retract.
SET 'execution.batch-size' = '1';
CREATE TABLE auction (id BIGINT, cat BIGINT, ts TIMESTAMP(3), exp TIMESTAMP(3)) WITH (connector = 'file', path = 'auction.jsonl');
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (cat BIGINT, avg_final BIGINT, mx BIGINT, mn BIGINT, n BIGINT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT Q.cat, AVG(Q.final), MAX(Q.final), MIN(Q.final), COUNT(*)
FROM (
  SELECT MAX(B.price) AS final, A.cat
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.ts BETWEEN A.ts AND A.exp
  GROUP BY A.id, A.cat
) Q
GROUP BY Q.cat;
