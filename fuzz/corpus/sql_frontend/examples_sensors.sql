-- Clean sensor readings: drop implausible temperatures, convert to Fahrenheit,
-- label each reading. Malformed lines go to a dead-letter file (see the summary).
CREATE TABLE readings (
  sensor STRING,
  ts TIMESTAMP(3),
  temperature DOUBLE,
  humidity INT,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'file',
  'path' = 'examples/data/sensors.jsonl',
  'format' = 'json',
  'dead-letter.path' = 'examples-out/sensors.rejected.jsonl'
);

CREATE TABLE cleaned (
  sensor STRING,
  ts TIMESTAMP(3),
  celsius DOUBLE,
  fahrenheit DOUBLE,
  level STRING,
  humidity INT
) WITH (
  connector = 'file',
  path = 'examples-out/cleaned.jsonl'
);

CREATE VIEW plausible AS
  SELECT * FROM readings WHERE temperature BETWEEN -50 AND 60;

INSERT INTO cleaned
SELECT
  UPPER(sensor),
  ts,
  temperature,
  ROUND(temperature * 9 / 5 + 32, 1),
  CASE WHEN temperature >= 22 THEN 'warm' WHEN temperature >= 20 THEN 'mild' ELSE 'cool' END,
  humidity
FROM plausible;
