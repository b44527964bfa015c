-- Nexmark q9, winning bids: each auction's highest bid within its lifetime (a join,
-- then Top-1 per auction with ROW_NUMBER).
CREATE TABLE nexmark_q9 (id BIGINT, seller BIGINT, category BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, bid_date_time TIMESTAMP(3))
WITH (connector = 'blackhole');
INSERT INTO nexmark_q9
SELECT id, seller, category, auction, bidder, price, bid_date_time
FROM (
  SELECT A.id, A.seller, A.category, B.auction, B.bidder, B.price, B.date_time AS bid_date_time,
    ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
)
WHERE rownum <= 1;
