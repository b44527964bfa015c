WITH m AS (SELECT (date_time / 10000) * 10000 + 10000 AS we, MAX(price) AS maxprice FROM bid GROUP BY 1)
SELECT B.auction, B.bidder, B.price, B.date_time, B.extra
FROM bid B JOIN m ON B.price = m.maxprice
WHERE B.date_time BETWEEN m.we - 10000 AND m.we
