SELECT auction, bidder, price, channel,
  split_index(url, '/', 3), split_index(url, '/', 4), split_index(url, '/', 5)
FROM bid
