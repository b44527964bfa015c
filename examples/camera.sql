-- The camera demo (`runnel demo` runs it with four simulated cameras).
--
-- Cameras POST one JPEG per second to /v1/topics/frames/records with X-Key: cam-<i>
-- and X-Event-Time. Every frame is classified with the bundled ImageNet model and its
-- objects are detected with the bundled COCO detector (YOLOv4-tiny); the per-frame
-- results go to the log topic `labels`, to a live gallery (boxes drawn on the frames)
-- and to a Delta Lake table (demo-out/warehouse/frames); labels are counted per
-- camera per 10-second window into a chart, a table and a file, objects per class
-- into a chart, and "an object of class C appeared on camera K" events go to the log
-- topic `events` and a table.
--
-- Run it yourself:  runnel run examples/camera.sql --listen 127.0.0.1:8080
--                   runnel camera-sim --cameras 4 --fps 1

SET 'pipeline.name' = 'camera-demo';
-- A camera that stops sending must not hold the windows of the others back.
SET 'source.idle-timeout' = '3 s';
-- The detector on a 320×320 letterbox (NVR systems' usual size on CPUs): ~40 % less work
-- than its native 416, so 16 cameras at a frame a second fit two cores; close-ups of
-- large objects score lower (remove this line for 416).
SET 'vision.detect-size' = '320';

CREATE TABLE frames (
  key STRING,                 -- X-Key: the camera
  `value` BYTES,              -- the JPEG
  event_time TIMESTAMP(3),    -- X-Event-Time: when the camera took the picture
  ingest_time TIMESTAMP(3),   -- when runnel's log appended it
  `partition` INT,
  `offset` BIGINT,
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND
) WITH (connector = 'log', topic = 'frames', format = 'raw');

-- Per-frame results, as JSON lines in the log.
CREATE TABLE labels (
  camera STRING, event_time TIMESTAMP(3), label STRING, score DOUBLE, latency_ms BIGINT
) WITH (connector = 'log', topic = 'labels', format = 'json');

-- The latest frame of each camera with its label and objects, on the web page.
CREATE TABLE latest_frames (
  camera STRING, event_time TIMESTAMP(3), label STRING, score DOUBLE, latency_ms BIGINT,
  objects ARRAY<ROW<label STRING, score DOUBLE, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE>>,
  `partition` INT, `offset` BIGINT
) WITH (connector = 'dashboard', title = 'Latest frame per camera', view = 'gallery',
        key = 'camera', 'image.topic' = 'frames');

-- Frames per label per camera and 10-second window: a chart, a table and files.
CREATE TABLE label_counts (
  camera STRING, label STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), frames BIGINT
) WITH (connector = 'dashboard', title = 'Labels per camera (10 s windows)', view = 'table',
        'max-rows' = '100');

CREATE TABLE frames_per_camera (
  camera STRING, window_end TIMESTAMP(3), frames BIGINT, avg_score DOUBLE
) WITH (connector = 'dashboard', title = 'Frames per camera', view = 'timeseries',
        x = 'window_end', y = 'frames', series = 'camera');

CREATE TABLE label_counts_file (
  camera STRING, label STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), frames BIGINT
) WITH (connector = 'file', path = 'demo-out/label_counts', format = 'json',
        'sink.rolling-policy.rollover-interval' = '2 min');
-- (This pipeline never ends, so it checkpoints every 10 s and the file sink writes
-- exactly-once part files into that directory: each checkpoint's rows are appended to
-- a hidden part per subtask, shown as part-<subtask>-<first>-<last>.jsonl every 2 minutes
-- and when the demo stops, instead of a tiny part per checkpoint.)

-- Every frame's result for the warehouse: a Delta Lake table partitioned by day and
-- camera, one Delta commit per checkpoint. Read it with
--   runnel query "SELECT camera, label, COUNT(*) AS n FROM \`demo-out/warehouse/frames\` GROUP BY camera, label"
-- or pandas:  python3 -c "from deltalake import DeltaTable; print(DeltaTable('demo-out/warehouse/frames').to_pandas())"
CREATE TABLE warehouse_frames (
  event_time TIMESTAMP(3), label STRING, score DOUBLE, latency_ms BIGINT,
  `partition` INT, `offset` BIGINT, `date` DATE, camera STRING
) PARTITIONED BY (`date`, camera)
WITH (connector = 'delta', path = 'demo-out/warehouse/frames');

-- Objects per class per camera and 10-second window, as a chart.
CREATE TABLE object_counts (
  series STRING, window_end TIMESTAMP(3), objects BIGINT
) WITH (connector = 'dashboard', title = 'Objects per class per camera (10 s windows)',
        view = 'timeseries', x = 'window_end', y = 'objects', series = 'series');

-- "An object of class C appeared on camera K at T": a class in a frame that was not in
-- the camera's previous frame. To the log topic `events` (for other systems) and a table.
CREATE TABLE events (
  camera STRING, object STRING, event_time TIMESTAMP(3), score DOUBLE
) WITH (connector = 'log', topic = 'events', format = 'json');
CREATE TABLE object_events (
  camera STRING, object STRING, event_time TIMESTAMP(3), score DOUBLE
) WITH (connector = 'dashboard', title = 'Objects appearing', view = 'table', 'max-rows' = '50');

-- Classify and detect once per frame; unreadable images give NULL and a dead letter.
CREATE VIEW classified AS
SELECT key AS camera, event_time, classify(`value`) AS prediction, detect(`value`) AS objects,
       ingest_time, `partition`, `offset`
FROM frames;

-- latency_ms: from the frame's append to the log (just before its POST was
-- acknowledged) to now, right after it was classified.
CREATE VIEW results AS
SELECT camera, event_time, prediction['label'] AS label, prediction['score'] AS score,
       objects, ms_since(ingest_time) AS latency_ms, `partition`, `offset`
FROM classified
WHERE prediction IS NOT NULL;

INSERT INTO labels
SELECT camera, event_time, label, score, latency_ms FROM results;

INSERT INTO latest_frames
SELECT camera, event_time, label, score, latency_ms, objects, `partition`, `offset` FROM results;

INSERT INTO warehouse_frames
SELECT event_time, label, score, latency_ms, `partition`, `offset`, CAST(event_time AS DATE),
       camera
FROM results;

CREATE VIEW counts AS
SELECT camera, label, window_start, window_end, COUNT(*) AS frames
FROM TABLE(TUMBLE(TABLE results, DESCRIPTOR(event_time), INTERVAL '10' SECOND))
GROUP BY camera, label, window_start, window_end;

INSERT INTO label_counts SELECT * FROM counts;
INSERT INTO label_counts_file SELECT * FROM counts;

INSERT INTO frames_per_camera
SELECT camera, window_end, COUNT(*), AVG(score)
FROM TABLE(TUMBLE(TABLE results, DESCRIPTOR(event_time), INTERVAL '10' SECOND))
GROUP BY camera, window_start, window_end;

INSERT INTO object_counts
SELECT camera || ' ' || d.object, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE results, DESCRIPTOR(event_time), INTERVAL '10' SECOND))
  CROSS JOIN UNNEST(objects) AS d (object, confidence, x1, y1, x2, y2)
GROUP BY camera, d.object, window_start, window_end;

-- Each frame with the time of its camera's previous frame; each object with the last
-- time its class was seen on that camera: earlier than the previous frame (or never)
-- means it just appeared. ROWS frames, so that two objects of one class in a frame
-- (rows of equal time) are taken one after the other: the first may be an event, the
-- second sees the first.
CREATE VIEW framed AS
SELECT camera, event_time, objects,
       LAG(event_time) OVER (PARTITION BY camera ORDER BY event_time
                            ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev_frame
FROM results;

CREATE VIEW sightings AS
SELECT camera, event_time, prev_frame, d.object, d.confidence
FROM framed CROSS JOIN UNNEST(objects) AS d (object, confidence, x1, y1, x2, y2);

CREATE VIEW appeared AS
SELECT camera, object, event_time, confidence AS score
FROM (SELECT *, LAG(event_time) OVER (PARTITION BY camera, object ORDER BY event_time
                                ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS last_seen
      FROM sightings)
WHERE last_seen IS NULL OR last_seen < prev_frame;

INSERT INTO events SELECT * FROM appeared;
INSERT INTO object_events SELECT * FROM appeared;
