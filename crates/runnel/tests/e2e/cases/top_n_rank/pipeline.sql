-- Top-N with RANK(): equal prices share a number and the next number skips, so the
-- two "best" of an auction may be more than two rows; an updating result.
SET 'execution.batch-size' = '1';
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (auction BIGINT, price BIGINT, r BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT auction, price, r FROM (
  SELECT *, RANK() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid
) WHERE r <= 2;
