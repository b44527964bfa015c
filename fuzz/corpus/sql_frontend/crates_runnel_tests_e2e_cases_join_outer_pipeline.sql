-- LEFT and FULL OUTER joins: a NULL-padded row while there is no match, retracted when
-- one arrives; the final state is what a batch join would give.
SET 'execution.batch-size' = '1';
CREATE TABLE auction (id BIGINT, cat BIGINT, ts TIMESTAMP(3), exp TIMESTAMP(3)) WITH (connector = 'file', path = 'auction.jsonl');
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (id BIGINT, cat BIGINT, auction BIGINT, price BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT A.id, A.cat, B.auction, B.price FROM auction A FULL OUTER JOIN bid B ON A.id = B.auction AND B.price < 100;
