SELECT B.auction, B.bidder, B.price, B.channel, B.date_time, A.item_name, A.initial_bid, A.seller, A.category
FROM bid B JOIN auction A ON B.auction = A.id WHERE A.category = 10
