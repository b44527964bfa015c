CREATE TABLE orders (id BIGINT, product BIGINT, p AS PROCTIME()) WITH (connector = 'file', path = 'orders.jsonl');
CREATE TABLE products (id BIGINT, name STRING) WITH (connector = 'nexmark', stream = 'person');
CREATE TABLE output (id BIGINT, name STRING) WITH (connector = 'blackhole');
INSERT INTO output
SELECT o.id, d.name FROM orders AS o JOIN products FOR SYSTEM_TIME AS OF o.p AS d ON o.product = d.id;
