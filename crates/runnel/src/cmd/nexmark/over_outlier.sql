-- Outlier scoring per auction over OVER frames (not a Nexmark query): each bid's
-- price against the auction's last 20 bids, by z-score and the moving average.
CREATE TABLE nexmark_over_outlier (auction BIGINT, price BIGINT, avg_price DOUBLE, z DOUBLE)
WITH (connector = 'blackhole');
INSERT INTO nexmark_over_outlier
SELECT auction, price,
  AVG(CAST(price AS DOUBLE)) OVER w,
  zscore(price) OVER w
FROM bid
WINDOW w AS (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 20 PRECEDING AND CURRENT ROW);
