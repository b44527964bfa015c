-- Keep-first deduplication on processing time (not a Nexmark query): each bidder's
-- first bid per auction, append-only (q18 keeps the last, an updating result).
CREATE TABLE nexmark_dedup_first (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3))
WITH (connector = 'blackhole');
INSERT INTO nexmark_dedup_first
SELECT auction, bidder, price, date_time
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY p_time ASC) AS rn
  FROM bid_p
)
WHERE rn = 1;
