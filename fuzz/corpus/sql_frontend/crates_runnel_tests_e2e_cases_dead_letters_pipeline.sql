CREATE TABLE src (id BIGINT, v BIGINT) WITH (connector = 'file', path = 'input.jsonl', 'dead-letter.path' = 'rejects.jsonl');
CREATE TABLE output (id BIGINT, v BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT id, v FROM src;
