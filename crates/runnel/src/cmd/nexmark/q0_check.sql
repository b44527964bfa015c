-- q0 with a validation rule on its sink (not a Nexmark query): every bid is checked
-- against CHECK (price > 0 AND bidder IS NOT NULL) before it is written, to measure
-- what a rule costs against plain q0.
CREATE TABLE nexmark_q0_check (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING,
  CONSTRAINT sane_bid CHECK (price > 0 AND bidder IS NOT NULL))
WITH (connector = 'blackhole');
INSERT INTO nexmark_q0_check SELECT auction, bidder, price, date_time, extra FROM bid;
