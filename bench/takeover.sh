#!/usr/bin/env bash
# Takeover after a SIGKILL: three distributed members of a pipeline (6 input partitions,
# exactly-once Kafka and file sinks, checkpoints every 200 ms in a shared directory) against a
# tansu broker on loopback; member b is SIGKILLed 5 s after all six tasks started and not
# restarted. Prints the seconds from the kill to a survivor's first "resumed from checkpoint".
#
#   bench/takeover.sh [SESSION_TIMEOUT]      (default: 10 s, runnel's default)
set -euo pipefail
TIMEOUT=${1:-10 s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/tansu-env.sh"
"$TANSU" topic create d_in --broker "tcp://$BOOT" --partitions 6 > /dev/null
"$TANSU" topic create d_out --broker "tcp://$BOOT" --partitions 1 > /dev/null
cat > "$WORK/dist.sql" <<SQL
SET 'pipeline.name' = 'dist';
SET 'execution.mode' = 'distributed';
SET 'distributed.session-timeout' = '$TIMEOUT';
SET 'execution.checkpointing.interval' = '200 ms';
SET 'state.checkpoints.dir' = 'shared-state';
CREATE TABLE events (k STRING, seq BIGINT, ts BIGINT)
  WITH ('connector' = 'kafka', 'topic' = 'd_in', 'properties.bootstrap.servers' = '$BOOT',
        'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
CREATE TABLE out (k STRING, seq BIGINT, twice BIGINT)
  WITH ('connector' = 'kafka', 'topic' = 'd_out', 'properties.bootstrap.servers' = '$BOOT',
        'sink.delivery-guarantee' = 'exactly-once', 'format' = 'json');
CREATE TABLE files (k STRING, seq BIGINT, twice BIGINT) WITH ('connector' = 'file', 'path' = 'out-files');
INSERT INTO out SELECT k, seq, seq * 2 FROM events WHERE MOD(seq, 5) <> 3;
INSERT INTO files SELECT k, seq, seq * 2 FROM events WHERE MOD(seq, 5) <> 3;
SQL
for w in a b c; do
  RUNNEL_LOG=warn "$RUNNEL" run "$WORK/dist.sql" --worker-id $w --data-dir data-$w > $w.log 2>&1 &
done
for _ in $(seq 120); do
  [ "$(cat a.log b.log c.log | grep -c 'started (no checkpoint yet)')" -ge 6 ] && break; sleep 1
done
sleep 5
start=$(date +%s.%N)
pkill -9 -f -- "--worker-id b" || true
for _ in $(seq 1200); do grep -q "resumed from checkpoint" a.log c.log && break; sleep 0.1; done
end=$(date +%s.%N)
if grep -q "resumed from checkpoint" a.log c.log; then
  python3 -c "print(f'session_timeout=\"$TIMEOUT\" takeover_s={$end-$start:.1f}')"
else
  echo "session_timeout=\"$TIMEOUT\" takeover: none within 120 s"; cat a.log c.log
fi
