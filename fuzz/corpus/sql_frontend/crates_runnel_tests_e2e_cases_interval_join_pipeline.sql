-- An interval join: bids within 15 seconds after their auction's start; append-only,
-- its state freed as the watermark passes.
CREATE TABLE auction (id BIGINT, cat BIGINT, ts TIMESTAMP(3), exp TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH (connector = 'file', path = 'auction.jsonl');
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (id BIGINT, price BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT A.id, B.price FROM auction A JOIN bid B
ON A.id = B.auction AND B.ts BETWEEN A.ts AND A.ts + INTERVAL '15' SECOND;
