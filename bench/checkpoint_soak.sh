#!/usr/bin/env bash
# Kill-and-restart soak for exactly-once recovery: N SIGKILLs of `runnel run` at random
# moments (40-440 ms after each start), then a run to the end; the committed output of the
# file sinks and the log sink must equal a clean run's.
#   bench/checkpoint_soak.sh [N] [RUNNEL]      (default 150 kills, target/release/runnel)
set -u
N=${1:-150}
B=${2:-${CARGO_TARGET_DIR:-$HOME/.cache/runnel/target}/release/runnel}
W=$(mktemp -d); cd "$W" || exit 1
python3 - <<'PY'
import json
base = 1764000000000
fs = [open('ev%d.jsonl' % k, 'w') for k in range(8)]
for i in range(800000):
    fs[i % 8].write(json.dumps({"k": "k%d" % (i % 8), "seq": i // 8, "ts": base + i}) + "\n")
PY
cat > p.sql <<'SQL'
SET 'execution.checkpointing.interval' = '100 ms';
SET 'execution.batch-size' = '500';
CREATE TABLE events (k STRING, seq BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' HOUR)
  WITH (connector = 'log', topic = 'events', format = 'json', 'scan.startup.mode' = 'earliest', bounded = 'true');
CREATE TABLE copy (k STRING, seq BIGINT) WITH (connector = 'file', path = 'out/copy');
CREATE TABLE counts (k STRING, window_end TIMESTAMP(3), n BIGINT, mx BIGINT) WITH (connector = 'file', path = 'out/counts');
CREATE TABLE copy_log (k STRING, seq BIGINT) WITH (connector = 'log', topic = 'copy_out', format = 'json', partitions = '2');
INSERT INTO copy SELECT k, seq FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO copy_log SELECT k, seq FROM events WHERE MOD(seq, 3) <> 1;
INSERT INTO counts SELECT k, window_end, COUNT(*), MAX(seq)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
SQL
prep() { rm -rf d out; "$B" topics create events --partitions 4 --data-dir d >/dev/null 2>&1
  for k in 0 1 2 3 4 5 6 7; do "$B" produce events --key k$k --file ev$k.jsonl --data-dir d >/dev/null 2>&1; done; }
dump() { sort out/copy/part-* > "$1"_copy.txt; sort out/counts/part-* > "$1"_counts.txt
  "$B" consume copy_out --from-beginning --data-dir d --max 10000000 2>/dev/null | python3 -c "
import sys, json
print('\n'.join(sorted(json.dumps(json.loads(l)['value'], sort_keys=True) for l in sys.stdin if l.strip())))" > "$1"_log.txt; }
prep; "$B" run p.sql --data-dir d -p 2 >/dev/null 2>&1; dump ref
prep; resumed=0; start=$(date +%s)
for i in $(seq 1 "$N"); do
  "$B" run p.sql --data-dir d -p 2 >/dev/null 2>run.log & pid=$!
  sleep "$(printf '0.%03d' $((40 + RANDOM % 400)))"; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  grep -q resuming run.log && resumed=$((resumed + 1))
done
"$B" run p.sql --data-dir d -p 2 >/dev/null 2>&1; dump got
echo "kills=$N resumed=$resumed seconds=$(( $(date +%s) - start ))"
rc=0
for f in copy counts log; do
  if cmp -s ref_$f.txt got_$f.txt; then echo "$f: identical ($(wc -l < got_$f.txt) rows)"
  else echo "$f: DIFFERENT ($(wc -l < ref_$f.txt) vs $(wc -l < got_$f.txt) rows)"; rc=1; fi
done
rm -rf "$W"; exit $rc
