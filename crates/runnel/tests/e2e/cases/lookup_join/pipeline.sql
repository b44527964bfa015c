-- A lookup join (Flink's processing-time temporal join): each order looks up its
-- product in a CSV file (Flink's filesystem format: no header, columns in order). A key
-- expression, several matches per key, a residual condition and LEFT padding.
CREATE TABLE orders (id BIGINT, product BIGINT, qty INT, ts TIMESTAMP(3), p AS PROCTIME())
WITH (connector = 'file', path = 'orders.jsonl');
CREATE TABLE products (pid BIGINT, name STRING, price DOUBLE)
WITH ('connector.type' = 'filesystem', 'connector.path' = 'file://products.csv', 'format.type' = 'csv');
CREATE TABLE output (id BIGINT, name STRING, total DOUBLE) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output
SELECT o.id, d.name, o.qty * d.price
FROM orders AS o
LEFT JOIN products FOR SYSTEM_TIME AS OF o.p AS d
ON o.product + 0 = d.pid AND d.price < 100;
