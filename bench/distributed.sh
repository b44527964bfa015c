#!/usr/bin/env bash
# A Nexmark-shaped window query (bids keyed by nothing, grouped by auction: every row
# crosses a repartition topic) on 1, 2 and 3 distributed members on this machine, and the
# same query in one process, against a tansu broker (the Kafka tests' broker).
#
#   bench/distributed.sh [BIDS] [MEMBERS...]      (default: 500000 bids, members 1 2 3)
#
# Prints per run: members=N seconds=S rows_per_s=R, and joined_s (until the group gave out
# all 12 tasks) with processing_s / processing_rows_per_s after that. A run is timed from the
# members' start until every bid has been read by a task of the second sub-plan (it
# crossed the repartition topic, exactly once, in a committed transaction); the
# single-process run reads the topic to its end and exits.
set -euo pipefail
BIDS=${1:-500000}
shift || true
MEMBERS=${*:-1 2 3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/tansu-env.sh"
"$TANSU" topic create bids --broker "tcp://$BOOT" --partitions 6 > /dev/null
BID="auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING"
EVENTS=$((BIDS * 50 / 46 + 50))
cat > produce.sql <<EOF
CREATE TABLE bid ($BID) WITH ('connector' = 'nexmark', 'stream' = 'bid', 'events' = '$EVENTS');
CREATE TABLE k ($BID) WITH ('connector' = 'kafka', 'topic' = 'bids',
  'properties.bootstrap.servers' = '$BOOT', 'sink.partitioner' = 'round-robin');
INSERT INTO k SELECT * FROM bid;
EOF
"$RUNNEL" run produce.sql --data-dir produce 2>&1 | grep 'sink   k' || true
QUERY="INSERT INTO out SELECT auction, window_end, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;"
SOURCE="CREATE TABLE bids ($BID, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
  WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '$BOOT',
        'scan.startup.mode' = 'earliest-offset', 'format' = 'json'"
SINK="CREATE TABLE out (auction BIGINT, window_end TIMESTAMP(3), n BIGINT, mx BIGINT)
  WITH ('connector' = 'blackhole');"
cat > single.sql <<EOF
SET 'execution.checkpointing.interval' = 'off';
$SOURCE, 'scan.bounded.mode' = 'latest-offset');
$SINK
$QUERY
EOF
start=$(date +%s.%N)
"$RUNNEL" run single.sql --data-dir single -p 2 > /dev/null 2>&1
end=$(date +%s.%N)
python3 -c "s=$end-$start; print(f'members=single-process seconds={s:.2f} rows_per_s={$BIDS/s:.0f}')"
for n in $MEMBERS; do
  cat > dist.sql <<EOF
SET 'pipeline.name' = 'q$n';
SET 'execution.mode' = 'distributed';
SET 'execution.checkpointing.interval' = '1 s';
SET 'state.checkpoints.dir' = 'state';
$SOURCE);
$SINK
$QUERY
EOF
  ports=()
  pids=()
  start=$(date +%s.%N)
  for i in $(seq "$n"); do
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    ports+=("$p")
    "$RUNNEL" run dist.sql --worker-id "w$i" --data-dir "d$n-$i" --listen "127.0.0.1:$p" \
      > "member-$n-$i.log" 2>&1 &
    pids+=($!)
  done
  python3 - "$BIDS" "$n" "${ports[@]}" <<'EOF'
import json, sys, time, urllib.request
want, name, ports = int(sys.argv[1]), "q" + sys.argv[2], sys.argv[3:]
deadline = time.time() + 1800
t0, joined = time.time(), None
while time.time() < deadline:
    down, tasks = 0, 0
    for p in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/api/pipelines/{name}", timeout=2) as r:
                body = json.load(r)
        except Exception:
            continue
        d = body.get("distributed") or {}
        tasks += len(d.get("tasks", []))
        down += sum(t["rows_in"] for t in d.get("tasks", []) if t["task"].startswith("task-1-"))
    if joined is None and tasks >= 12:
        joined = time.time()
    if down >= want:
        if joined is not None:
            print(f"joined_s={joined - t0:.2f} processing_s={time.time() - joined:.2f} "
                  f"processing_rows_per_s={want / max(time.time() - joined, 1e-9):.0f}")
        sys.exit(0)
    time.sleep(0.2)
sys.exit("timed out")
EOF
  end=$(date +%s.%N)
  python3 -c "s=$end-$start; print(f'members={$n} seconds={s:.2f} rows_per_s={$BIDS/s:.0f}')"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
done
