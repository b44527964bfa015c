SELECT (date_time / 10000) * 10000, (date_time / 10000) * 10000 + 10000, MAX(price) FROM bid GROUP BY date_time / 10000
