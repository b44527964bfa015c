-- The camera demo on MQTT input: cameras publish one JPEG per second to an MQTT broker
-- (topic frames/cam-<k>, QoS 1); every frame is classified with the bundled ImageNet
-- model, the per-frame labels go to the page and to files, and labels are counted per
-- camera per 10-second window.
--
-- Run it yourself (a broker on localhost:1883, e.g. Debian's mosquitto):
--   runnel run examples/camera_mqtt.sql --listen 127.0.0.1:8080
--   runnel camera-sim --cameras 4 --fps 1 --mqtt mqtt://127.0.0.1:1883
-- (For another broker, edit the url below.)

SET 'pipeline.name' = 'camera-mqtt';
SET 'source.idle-timeout' = '3 s';
-- Frames are acknowledged to the broker when the checkpoint covering them completes.
SET 'execution.checkpointing.interval' = '2 s';

CREATE TABLE frames (
  `value` BYTES,                                        -- the JPEG
  src_topic STRING METADATA FROM 'topic',               -- frames/cam-<k>
  received TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',  -- when runnel got it
  WATERMARK FOR received AS received - INTERVAL '2' SECOND
) WITH ('connector' = 'mqtt', 'url' = 'mqtt://127.0.0.1:1883', 'topic' = 'frames/+',
        'format' = 'raw', 'qos' = '1', 'client-id' = 'runnel-camera-mqtt');

CREATE TABLE latest_labels (
  camera STRING, received TIMESTAMP_LTZ(3), label STRING, score DOUBLE
) WITH (connector = 'dashboard', title = 'Latest label per camera', view = 'table',
        key = 'camera');

CREATE TABLE labels_file (
  camera STRING, received TIMESTAMP_LTZ(3), label STRING, score DOUBLE
) WITH (connector = 'file', path = 'demo-out/mqtt_labels', format = 'json');

CREATE TABLE label_counts (
  camera STRING, label STRING, window_end TIMESTAMP_LTZ(3), frames BIGINT
) WITH (connector = 'dashboard', title = 'Labels per camera (10 s windows)', view = 'table',
        'max-rows' = '100');

CREATE VIEW results AS
SELECT SPLIT_INDEX(src_topic, '/', 1) AS camera, received,
       prediction['label'] AS label, prediction['score'] AS score
FROM (SELECT src_topic, received, classify(`value`) AS prediction FROM frames)
WHERE prediction IS NOT NULL;

INSERT INTO latest_labels SELECT * FROM results;
INSERT INTO labels_file SELECT * FROM results;

INSERT INTO label_counts
SELECT camera, label, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE results, DESCRIPTOR(received), INTERVAL '10' SECOND))
GROUP BY camera, label, window_start, window_end;
