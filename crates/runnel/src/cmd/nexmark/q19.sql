-- Nexmark q19, auction Top-N: the ten highest bids of each auction (an updating Top-N).
CREATE TABLE nexmark_q19 (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING, rank_number BIGINT)
WITH (connector = 'blackhole');
INSERT INTO nexmark_q19
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
  FROM bid
)
WHERE rank_number <= 10;
