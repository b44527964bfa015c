-- Equal prices rank in arrival order, which a parallel run does not fix: the rows must
-- match, and each rank must lie among the ranks its price can have.
SELECT auction, bidder, price, channel, url, date_time, extra, 1 FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time ASC) AS rn FROM bid
) WHERE rn <= 10
-- output:
SELECT auction, bidder, price, channel, url, date_time, extra,
  (SELECT COUNT(*) FROM out o WHERE o.auction = out.auction AND o.price > out.price) < rank_number
  AND rank_number <= (SELECT COUNT(*) FROM out o WHERE o.auction = out.auction AND o.price >= out.price)
FROM out
