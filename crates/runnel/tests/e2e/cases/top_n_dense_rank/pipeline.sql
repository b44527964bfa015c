-- Top-N with DENSE_RANK(): equal prices share a number and numbers do not skip, so
-- the two best prices of an auction may be more than two rows; an updating result.
SET 'execution.batch-size' = '1';
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (auction BIGINT, price BIGINT, r BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT auction, price, r FROM (
  SELECT *, DENSE_RANK() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid
) WHERE r <= 2;
