CREATE TABLE orders (id BIGINT, product BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (connector = 'file', path = 'orders.jsonl');
CREATE TABLE products (pid BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'products.csv', 'format' = 'csv');
CREATE TABLE output (id BIGINT, name STRING) WITH (connector = 'blackhole');
INSERT INTO output
SELECT o.id, d.name FROM orders AS o JOIN products FOR SYSTEM_TIME AS OF o.ts AS d ON o.product = d.pid;
