-- Nexmark q20, expand bid with auction: bids on category-10 auctions with the
-- auction's item (a regular join).
CREATE TABLE nexmark_q20 (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, bid_date_time TIMESTAMP(3),
  item_name STRING, initial_bid BIGINT, seller BIGINT, category BIGINT)
WITH (connector = 'blackhole');
INSERT INTO nexmark_q20
SELECT B.auction, B.bidder, B.price, B.channel, B.date_time, A.item_name, A.initial_bid, A.seller, A.category
FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10;
