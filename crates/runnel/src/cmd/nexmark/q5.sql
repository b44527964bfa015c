-- Nexmark q5, hot items: per 10 s window sliding by 2 s, the auctions with the most bids.
CREATE TABLE nexmark_q5 (auction BIGINT, window_start TIMESTAMP(3), num BIGINT) WITH (connector = 'blackhole');
INSERT INTO nexmark_q5
SELECT AuctionBids.auction, AuctionBids.window_start, AuctionBids.num
FROM (
  SELECT auction, window_start, window_end, COUNT(*) AS num
  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
  GROUP BY auction, window_start, window_end
) AS AuctionBids
JOIN (
  SELECT window_start, window_end, MAX(num) AS maxn
  FROM (
    SELECT auction, window_start, window_end, COUNT(*) AS num
    FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end
  )
  GROUP BY window_start, window_end
) AS MaxBids
ON AuctionBids.window_start = MaxBids.window_start
  AND AuctionBids.window_end = MaxBids.window_end
  AND AuctionBids.num >= MaxBids.maxn;
