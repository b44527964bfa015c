-- The data-cleaning layer on an hour of readings from six sensors with injected faults
-- (examples/data/make_sensor_faults.py says which): validation rules with a quarantine,
-- deduplication, normalisation, outliers flagged against each sensor's neighbours, and
-- per-sensor statistics that show a stuck and a drifting sensor.
--
--   cargo run --release -- run examples/sensors_quality.sql
--
-- Outputs in examples-out/sensors/: clean.jsonl, outliers.jsonl, stats.jsonl, and
-- quarantine.jsonl (every rejected row with the rule it broke and its values).
-- With --http-port, GET /api/pipelines/sensors_quality/quality shows the live profile.

SET 'pipeline.name' = 'sensors_quality';
SET 'quality.profile' = 'on';
-- Small batches, as a live feed arrives: readings 3 minutes behind are then late.
SET 'execution.batch-size' = '64';

CREATE TABLE readings (
  sensor STRING NOT NULL,
  reading_time STRING,
  temperature DOUBLE,
  unit STRING,
  humidity DOUBLE,
  -- Times come as ISO 8601, epoch milliseconds and dd/MM/yyyy: one parser reads them all.
  ts AS parse_timestamp(reading_time),
  arrived AS PROCTIME(),
  CONSTRAINT readable_time CHECK (ts IS NOT NULL),
  CONSTRAINT temp_range CHECK (convert_unit(temperature, unit, 'C') BETWEEN -40 AND 85),
  CONSTRAINT humidity_range CHECK (humidity BETWEEN 0 AND 100),
  WATERMARK FOR ts AS ts - INTERVAL '10' SECOND
) WITH (
  'connector' = 'file',
  'path' = 'examples/data/sensor_faults.jsonl',
  'format' = 'json',
  -- Rejected rows (and lines that are not JSON) with their reasons.
  'dead-letter.path' = 'examples-out/sensors/quarantine.jsonl',
  'quality.on-violation' = 'dead-letter',
  -- A humidity over 100 % is suspicious but the temperature is still good: keep the row.
  'quality.on-violation.humidity_range' = 'warn'
);

-- One spelling per sensor, one unit for every temperature.
CREATE VIEW normalised AS
SELECT normalize_text(sensor) AS sensor, ts, arrived,
       convert_unit(temperature, unit, 'C') AS celsius, humidity
FROM readings;

-- A reading sent twice counts once: the first copy to arrive wins (append-only).
CREATE VIEW deduped AS
SELECT sensor, ts, celsius, humidity FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY sensor, ts ORDER BY arrived ASC) AS rn
  FROM normalised
) WHERE rn = 1;

-- Each reading against the last five minutes of its sensor.
CREATE VIEW scored AS
SELECT sensor, ts, celsius, humidity,
  moving_median(celsius) OVER w AS smoothed,
  robust_zscore(celsius) OVER w AS robust_z,
  is_outlier(celsius, 'mad', 6) OVER w AS outlier
FROM deduped
WINDOW w AS (PARTITION BY sensor ORDER BY ts ROWS BETWEEN 30 PRECEDING AND CURRENT ROW);

CREATE TABLE clean (
  sensor STRING, ts TIMESTAMP(3), celsius DOUBLE, smoothed DOUBLE, humidity DOUBLE
) WITH ('connector' = 'file', 'path' = 'examples-out/sensors/clean.jsonl');

CREATE TABLE outliers (
  sensor STRING, ts TIMESTAMP(3), celsius DOUBLE, smoothed DOUBLE, robust_z DOUBLE
) WITH ('connector' = 'file', 'path' = 'examples-out/sensors/outliers.jsonl');

CREATE TABLE stats (
  sensor STRING, window_start TIMESTAMP(3), readings BIGINT,
  mean DOUBLE, stddev DOUBLE, low DOUBLE, high DOUBLE,
  trend_per_hour DOUBLE, stuck BOOLEAN
) WITH ('connector' = 'file', 'path' = 'examples-out/sensors/stats.jsonl');

INSERT INTO clean
SELECT sensor, ts, celsius, smoothed, humidity FROM scored WHERE outlier IS NOT TRUE;

INSERT INTO outliers
SELECT sensor, ts, celsius, smoothed, robust_z FROM scored WHERE outlier;

-- Per sensor and 10 minutes: a stuck sensor has no spread, a drifting one a trend.
INSERT INTO stats
SELECT sensor, window_start, COUNT(*),
  ROUND(AVG(celsius), 2), ROUND(STDDEV_SAMP(celsius), 3), MIN(celsius), MAX(celsius),
  ROUND(REGR_SLOPE(celsius, CAST(UNIX_TIMESTAMP(CAST(ts AS STRING)) AS DOUBLE)) * 3600, 2),
  STDDEV_SAMP(celsius) < 0.01
FROM TABLE(TUMBLE(TABLE deduped, DESCRIPTOR(ts), INTERVAL '10' MINUTE))
GROUP BY sensor, window_start, window_end;
