SELECT id, seller, category, auction, bidder, price, bid_date_time FROM (
  SELECT A.id, A.seller, A.category, B.auction, B.bidder, B.price, B.date_time AS bid_date_time,
    ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
  FROM auction A JOIN bid B ON A.id = B.auction
  WHERE B.date_time BETWEEN A.date_time AND A.expires
) WHERE rownum <= 1
