-- Flink's AVG of a BIGINT is a BIGINT (the sum divided by the count, truncated).
SELECT category, SUM(final) / COUNT(final) FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM auction A JOIN bid B ON A.id = B.auction
  WHERE B.date_time BETWEEN A.date_time AND A.expires
  GROUP BY A.id, A.category
) GROUP BY category
