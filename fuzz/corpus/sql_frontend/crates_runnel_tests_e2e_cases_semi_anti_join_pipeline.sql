-- IN / EXISTS subqueries run as semi joins (append-only here), NOT IN / NOT EXISTS as
-- anti joins (updating: a row goes when its first match arrives).
SET 'execution.batch-size' = '1';
CREATE TABLE auction (id BIGINT, cat BIGINT, ts TIMESTAMP(3), exp TIMESTAMP(3)) WITH (connector = 'file', path = 'auction.jsonl');
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (id BIGINT, cat BIGINT, kind STRING) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT id, cat, 'in' FROM auction WHERE id IN (SELECT auction FROM bid WHERE price > 80);
INSERT INTO output SELECT id, cat, 'not exists' FROM auction A
WHERE NOT EXISTS (SELECT * FROM bid B WHERE B.auction = A.id AND B.price > 80);
