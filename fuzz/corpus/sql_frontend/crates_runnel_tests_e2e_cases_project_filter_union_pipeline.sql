CREATE TABLE orders (
  id BIGINT, customer STRING, amount DOUBLE, qty INT, ts TIMESTAMP(3), paid BOOLEAN, code STRING,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'file', 'path' = 'input.jsonl', 'format' = 'json');

CREATE TABLE output (
  id BIGINT, who STRING, total DOUBLE, size STRING, ts TIMESTAMP(3), code_len INT, kind STRING
) WITH (connector = 'file', path = 'output.jsonl');

SET 'pipeline.name' = 'orders';

CREATE VIEW paid_orders AS
  SELECT id, UPPER(customer) AS who, amount * qty AS total, qty, ts, code FROM orders WHERE paid;

INSERT INTO output
SELECT id, who, total,
       CASE WHEN qty >= 10 THEN 'big' WHEN qty >= 3 THEN 'medium' ELSE 'small' END,
       ts, CHAR_LENGTH(code), 'paid'
FROM paid_orders
UNION ALL
SELECT id, COALESCE(customer, 'nobody'), CAST(qty AS DOUBLE), 'n/a', ts + INTERVAL '1' SECOND, CAST(NULL AS INT), 'unpaid'
FROM orders WHERE NOT paid;
