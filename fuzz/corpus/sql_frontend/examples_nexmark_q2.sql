-- Nexmark q2 on the built-in generator: bids on every 123rd auction, to a file.
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND
) WITH (connector = 'nexmark', stream = 'bid', events = '1000000', seed = '7');

CREATE TABLE selected (auction BIGINT, price BIGINT, date_time TIMESTAMP(3))
WITH (connector = 'file', path = 'examples-out/q2.jsonl');

INSERT INTO selected
SELECT auction, price, date_time FROM bid WHERE MOD(auction, 123) = 0;
