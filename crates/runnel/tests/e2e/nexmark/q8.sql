SELECT P.id, P.name, P.ws FROM
  (SELECT DISTINCT id, name, (date_time / 10000) * 10000 AS ws FROM person) P
  JOIN (SELECT DISTINCT seller, (date_time / 10000) * 10000 AS ws FROM auction) A
  ON P.id = A.seller AND P.ws = A.ws
