-- Nexmark q10, log to file system: every bid, with its day and minute, written into
-- day/minute partitions (Hive-style directories); a partition gets its _SUCCESS file
-- once the watermark is a minute past its end. The bench puts the directory
-- --output names (or one in its scratch directory) in place of ${Q10_OUTPUT}.
CREATE TABLE nexmark_q10 (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING, dt STRING, hm STRING)
PARTITIONED BY (dt, hm) WITH (
  'connector' = 'filesystem',
  'path' = '${Q10_OUTPUT}',
  'format' = 'json',
  'sink.partition-commit.trigger' = 'partition-time',
  'sink.partition-commit.delay' = '1 min',
  'sink.partition-commit.policy.kind' = 'success-file',
  'partition.time-extractor.timestamp-pattern' = '$dt $hm:00',
  'sink.rolling-policy.rollover-interval' = '1 min'
);
INSERT INTO nexmark_q10
SELECT auction, bidder, price, date_time, extra,
  DATE_FORMAT(date_time, 'yyyy-MM-dd'), DATE_FORMAT(date_time, 'HH:mm')
FROM bid;
