-- Flink's function names and semantics (issue 15): Java date patterns, text timestamps,
-- field functions, regex and split, IF/IFNULL, JSON_VALUE.
CREATE TABLE t (id BIGINT, ts TIMESTAMP(3), s STRING, secs BIGINT, j STRING, n INT)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (id BIGINT, day STRING, clock STRING, lit STRING, hr BIGINT, mi BIGINT, dow BIGINT,
  mon BIGINT, yr BIGINT, doy BIGINT, q BIGINT, parsed TIMESTAMP(3), custom TIMESTAMP(3), unix BIGINT,
  fu STRING, fu2 STRING, re STRING, re0 STRING, part STRING, branch STRING, dflt BIGINT, jv STRING, jn STRING, plus_month TIMESTAMP(3), days INT)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT
  id,
  DATE_FORMAT(ts, 'yyyy-MM-dd'),
  DATE_FORMAT(ts, 'HH:mm:ss.SSS'),
  DATE_FORMAT(ts, '''at'' H''h'''),
  HOUR(ts), MINUTE(ts), DAYOFWEEK(ts), MONTH(ts), YEAR(ts), DAYOFYEAR(ts), QUARTER(ts),
  TO_TIMESTAMP(s),
  TO_TIMESTAMP('04/03/2026 10', 'dd/MM/yyyy HH'),
  UNIX_TIMESTAMP(s),
  FROM_UNIXTIME(secs),
  FROM_UNIXTIME(secs, 'yyyyMMdd'),
  REGEXP_EXTRACT(j, '"k":"([a-z]+)-(\d+)"', 2),
  REGEXP_EXTRACT(j, '[a-z]+-\d+', 0),
  SPLIT_INDEX(s, ' ', 1),
  IF(n > 2, 'big', 'small'),
  IFNULL(n, -1),
  JSON_VALUE(j, '$.k'),
  JSON_VALUE(j, '$.a[1].b'),
  TIMESTAMPADD(MONTH, 1, ts),
  TIMESTAMPDIFF(DAY, ts, TO_TIMESTAMP('2026-03-10 00:00:00'))
FROM t;
