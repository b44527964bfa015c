#!/usr/bin/env bash
# Nexmark q4 as Flink's suite writes it (the average winning price per category: a GROUP
# BY over the updating GROUP BY of a join), over Kafka topics of Nexmark auctions and bids,
# on two distributed members against one process; both write upsert-kafka, and the final
# states (each category's last committed value) must be equal. The updating rows of the
# first GROUP BY cross a repartition topic (row kinds in headers), as do the join's inputs
# and output.
#
#   bench/distributed_q4.sh [EVENTS]      (default 200000 Nexmark events)
#
# Prints the single process's categories and "EQUAL after N s" (N: polling time after the
# single process's result was read; the members run from before it) or "DIFFERENT" with
# both states. Needs tansu (the Kafka e2e tests fetch it).
set -euo pipefail
EVENTS=${1:-200000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/tansu-env.sh"
for t in bids auctions out_single out_dist; do "$TANSU" topic create $t --broker "tcp://$BOOT" --partitions 4 > /dev/null; done
BID="auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING"
AUC="id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING"
cat > produce.sql <<SQL
CREATE TABLE bid ($BID) WITH ('connector' = 'nexmark', 'stream' = 'bid', 'events' = '$EVENTS');
CREATE TABLE auction ($AUC) WITH ('connector' = 'nexmark', 'stream' = 'auction', 'events' = '$EVENTS');
CREATE TABLE kb ($BID) WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '$BOOT', 'sink.partitioner' = 'round-robin');
CREATE TABLE ka ($AUC) WITH ('connector' = 'kafka', 'topic' = 'auctions', 'properties.bootstrap.servers' = '$BOOT', 'sink.partitioner' = 'round-robin');
INSERT INTO kb SELECT * FROM bid;
INSERT INTO ka SELECT * FROM auction;
SQL
"$RUNNEL" run produce.sql --data-dir produce > produce.log 2>&1
q() { # $1 out topic, $2 extra source options
cat <<SQL
CREATE TABLE bid ($BID) WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '$BOOT', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json'$2);
CREATE TABLE auction ($AUC) WITH ('connector' = 'kafka', 'topic' = 'auctions', 'properties.bootstrap.servers' = '$BOOT', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json'$2);
CREATE TABLE out (category BIGINT, avg_final BIGINT, PRIMARY KEY (category) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = '$1', 'properties.bootstrap.servers' = '$BOOT', 'key.format' = 'json', 'value.format' = 'json', 'sink.delivery-guarantee' = 'exactly-once');
INSERT INTO out
SELECT Q.category, AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
SQL
}
{ echo "SET 'execution.checkpointing.interval' = '1 s';"; q out_single ", 'scan.bounded.mode' = 'latest-offset'"; } > single.sql
"$RUNNEL" run single.sql --data-dir single -p 2 > single.log 2>&1
{ echo "SET 'pipeline.name' = 'q4'; SET 'execution.mode' = 'distributed'; SET 'execution.checkpointing.interval' = '1 s'; SET 'state.checkpoints.dir' = 'state'; SET 'distributed.session-timeout' = '6 s';"; q out_dist ""; } > dist.sql
"$RUNNEL" run dist.sql --explain > explain.txt 2>&1 || { cat explain.txt; exit 1; }
"$RUNNEL" run dist.sql --worker-id a --data-dir da > a.log 2>&1 &
"$RUNNEL" run dist.sql --worker-id b --data-dir db > b.log 2>&1 &
read_final() {
cat > read.sql <<SQL
CREATE TABLE t (v STRING, k STRING METADATA FROM 'key', p INT METADATA FROM 'partition', o BIGINT METADATA FROM 'offset') WITH ('connector' = 'kafka', 'topic' = '$1', 'properties.bootstrap.servers' = '$BOOT', 'properties.isolation.level' = 'read_committed', 'format' = 'raw', 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
CREATE TABLE o (k STRING, p INT, o BIGINT, v STRING) WITH ('connector' = 'file', 'path' = 'read-$1.jsonl');
INSERT INTO o SELECT k, p, o, v FROM t;
SQL
rm -rf read-$1.jsonl rd-$1; "$RUNNEL" run read.sql --data-dir rd-$1 > /dev/null 2>&1
python3 - read-$1.jsonl <<'PY'
import json,sys
last={}
for l in open(sys.argv[1]):
    r=json.loads(l); at=(r['p'],r['o'])
    if r['k'] not in last or at>last[r['k']][0]: last[r['k']]=(at,r.get('v') or '')
print(json.dumps(sorted((k,v) for k,(a,v) in last.items() if v)))
PY
}
read_final out_single > single.final
echo "single: $(wc -c < single.final) bytes, $(python3 -c "import json;print(len(json.load(open('single.final'))))") categories"
for i in $(seq 60); do
  sleep 5
  read_final out_dist > dist.final
  if cmp -s single.final dist.final; then echo "EQUAL after $((i*5)) s"; exit 0; fi
done
echo "DIFFERENT"; head -c 600 single.final; echo; head -c 600 dist.final; echo; tail -5 a.log b.log
exit 1
