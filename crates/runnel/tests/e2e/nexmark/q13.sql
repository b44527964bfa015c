WITH RECURSIVE side(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM side WHERE k < 9999)
SELECT auction, bidder, price, date_time, CAST(k AS TEXT)
FROM bid JOIN side ON auction % 10000 = k
