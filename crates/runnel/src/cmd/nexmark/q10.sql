-- Nexmark q10, log to file: every bid with its day and minute as text (Flink writes
-- them into day/hour partitions of a file system; here the columns are computed).
CREATE TABLE nexmark_q10 (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING, dt STRING, hm STRING)
WITH (connector = 'blackhole');
INSERT INTO nexmark_q10
SELECT auction, bidder, price, date_time, extra,
  DATE_FORMAT(date_time, 'yyyy-MM-dd'), DATE_FORMAT(date_time, 'HH:mm')
FROM bid;
