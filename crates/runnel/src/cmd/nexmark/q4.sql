-- Nexmark q4, average price per category: the winning bid of each auction (bids in
-- its lifetime), averaged per category (an aggregate over an updating aggregate).
CREATE TABLE nexmark_q4 (id BIGINT, final BIGINT) WITH (connector = 'blackhole');
INSERT INTO nexmark_q4
SELECT Q.category, AVG(Q.final)
FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
  GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
