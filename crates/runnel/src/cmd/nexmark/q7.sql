-- Nexmark q7, highest bid: the bids that carry the highest price of their 10 s window
-- (a window aggregate joined back with the bids by an interval condition).
CREATE TABLE nexmark_q7 (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING)
WITH (connector = 'blackhole');
INSERT INTO nexmark_q7
SELECT B.auction, B.bidder, B.price, B.date_time, B.extra
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end AS date_time
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1
ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time;
