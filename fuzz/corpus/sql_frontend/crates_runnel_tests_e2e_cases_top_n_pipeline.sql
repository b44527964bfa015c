-- Top-N per key with ROW_NUMBER (Nexmark q19's shape): the two highest prices per
-- auction, numbered; an updating result.
SET 'execution.batch-size' = '1';
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (auction BIGINT, price BIGINT, rn BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT auction, price, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid
) WHERE rn <= 2;
