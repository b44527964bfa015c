SELECT auction, bidder, round(0.908 * price, 3), date_time, extra FROM bid
