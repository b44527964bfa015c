-- The camera demo's "object appeared" rule (examples/camera.sql) on detect()-shaped
-- rows: a class in a frame that was not in the camera's previous frame.
CREATE TABLE frames (
  camera STRING,
  objects ARRAY<ROW<label STRING, score DOUBLE, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE>>,
  event_time TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'input.jsonl');
CREATE TABLE output (camera STRING, object STRING, event_time TIMESTAMP(3))
WITH (connector = 'file', path = 'output.jsonl');
CREATE VIEW framed AS
SELECT camera, event_time, objects,
       LAG(event_time) OVER (PARTITION BY camera ORDER BY event_time
                            ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev_frame
FROM frames;
CREATE VIEW sightings AS
SELECT camera, event_time, prev_frame, d.object, d.confidence
FROM framed CROSS JOIN UNNEST(objects) AS d (object, confidence, x1, y1, x2, y2);
INSERT INTO output
SELECT camera, object, event_time
FROM (SELECT *, LAG(event_time) OVER (PARTITION BY camera, object ORDER BY event_time
                                ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS last_seen
      FROM sightings)
WHERE last_seen IS NULL OR last_seen < prev_frame;
