-- Processing-time windows depend on the wall clock: only each bidder's total is exact.
SELECT bidder, COUNT(*) FROM bid GROUP BY bidder
-- output:
SELECT bidder, SUM(bid_count) FROM out GROUP BY bidder
