-- Unbounded Nexmark bids through the stateful updating operators, with their state
-- bounded by table.exec.state.ttl: runs until Ctrl-C (memory soak, issue 15).
SET 'table.exec.state.ttl' = '30 s';
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  date_time TIMESTAMP(3), extra STRING, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'nexmark', stream = 'bid', rate = '100000');
CREATE TABLE auction (id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
  date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'nexmark', stream = 'auction', rate = '100000');
CREATE TABLE last_bid (auction BIGINT, bidder BIGINT, price BIGINT) WITH (connector = 'blackhole');
CREATE TABLE top_bids (auction BIGINT, price BIGINT, rn BIGINT) WITH (connector = 'blackhole');
CREATE TABLE per_category (category BIGINT, avg_final DOUBLE) WITH (connector = 'blackhole');
-- q18: the last bid per bidder and auction.
INSERT INTO last_bid SELECT auction, bidder, price FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rn FROM bid)
WHERE rn <= 1;
-- q19: the top 10 bids per auction.
INSERT INTO top_bids SELECT auction, price, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid)
WHERE rn <= 10;
-- q4: the average winning price per category (join, then two aggregates).
INSERT INTO per_category SELECT Q.category, AVG(Q.final) FROM (
  SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
  WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
  GROUP BY A.id, A.category) Q
GROUP BY Q.category;
