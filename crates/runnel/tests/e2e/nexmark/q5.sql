-- Each bid is in the five 10 s windows that start on a 2 s boundary at most 8 s before it.
WITH w AS (
  SELECT b.auction, (b.date_time / 2000) * 2000 - k.k * 2000 AS ws
  FROM bid b, (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) k
),
c AS (SELECT auction, ws, COUNT(*) AS num FROM w GROUP BY auction, ws),
m AS (SELECT ws, MAX(num) AS maxn FROM c GROUP BY ws)
SELECT c.auction, c.ws, c.num FROM c JOIN m ON c.ws = m.ws AND c.num >= m.maxn
