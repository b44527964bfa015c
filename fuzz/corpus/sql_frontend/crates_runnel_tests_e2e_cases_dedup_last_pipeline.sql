-- Deduplication keeping the last row per key (Nexmark q18's shape).
SET 'execution.batch-size' = '1';
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT auction, price, ts FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY ts DESC) AS rank_number FROM bid
) WHERE rank_number <= 1;
