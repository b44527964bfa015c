SELECT auction, bidder, price, date_time, extra,
  strftime('%Y-%m-%d', date_time / 1000, 'unixepoch'), strftime('%H:%M', date_time / 1000, 'unixepoch')
FROM bid
