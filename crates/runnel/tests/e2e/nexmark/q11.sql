-- Sessions: a bid more than 10 s after the bidder's previous one starts a new session,
-- which ends 10 s after its last bid.
WITH g AS (
  SELECT bidder, date_time,
    CASE WHEN date_time - LAG(date_time) OVER (PARTITION BY bidder ORDER BY date_time) < 10000
      THEN 0 ELSE 1 END AS starts
  FROM bid
),
s AS (
  SELECT bidder, date_time,
    SUM(starts) OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS session
  FROM g
)
SELECT bidder, COUNT(*), MIN(date_time), MAX(date_time) + 10000 FROM s GROUP BY bidder, session
