SELECT auction, bidder, round(0.908 * price, 3),
  CASE
    WHEN CAST(strftime('%H', date_time / 1000, 'unixepoch') AS INTEGER) BETWEEN 8 AND 18 THEN 'dayTime'
    WHEN CAST(strftime('%H', date_time / 1000, 'unixepoch') AS INTEGER) <= 6
      OR CAST(strftime('%H', date_time / 1000, 'unixepoch') AS INTEGER) >= 20 THEN 'nightTime'
    ELSE 'otherTime'
  END,
  date_time, extra, length(extra) - length(replace(extra, 'c', ''))
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
