-- Window Top-N: the highest bid per auction in each minute, append-only, emitted when
-- the window closes.
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' MINUTE)
WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (window_start TIMESTAMP(3), auction BIGINT, price BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT window_start, auction, price FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, auction ORDER BY price DESC) AS rn
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
) WHERE rn = 1;
