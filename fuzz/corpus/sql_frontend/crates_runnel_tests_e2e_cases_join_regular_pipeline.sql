-- A regular inner join of two unbounded streams (Nexmark q20's shape): append-only.
CREATE TABLE auction (id BIGINT, cat BIGINT, ts TIMESTAMP(3), exp TIMESTAMP(3)) WITH (connector = 'file', path = 'auction.jsonl');
CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'bid.jsonl');
CREATE TABLE output (auction BIGINT, price BIGINT, cat BIGINT) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT B.auction, B.price, A.cat FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id
WHERE A.cat = 10 AND B.price > 60;
