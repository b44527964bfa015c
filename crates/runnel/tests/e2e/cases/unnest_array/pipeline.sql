-- CROSS JOIN UNNEST of an array of scalars: one row per element; empty and NULL
-- arrays give no rows; a row whose array does not parse is a dead letter.
CREATE TABLE events (id BIGINT, tags ARRAY<STRING>, ts TIMESTAMP(3))
WITH (connector = 'file', path = 'input.jsonl', 'dead-letter.path' = 'rejects.jsonl');
CREATE TABLE output (id BIGINT, tag STRING, tags ARRAY<STRING>)
WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT id, t.tag, tags
FROM events CROSS JOIN UNNEST(events.tags) AS t (tag)
WHERE t.tag IS NULL OR t.tag <> 'skip';
