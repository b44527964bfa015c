SELECT auction, (date_time / 10000) * 10000, (date_time / 10000) * 10000 + 10000, COUNT(*), SUM(price), MAX(price)
FROM bid GROUP BY auction, date_time / 10000
