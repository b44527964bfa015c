# Sourced by the distributed benchmarks: finds runnel and tansu, makes a temporary working
# directory (removed on exit, with every background job killed), changes into it and
# starts a tansu broker (the Kafka e2e tests' broker, in memory) on a free loopback port,
# whose address it leaves in $BOOT. Needs ROOT (the checkout) set by the caller.
RUNNEL=${RUNNEL:-$ROOT/target/release/runnel}
[ -x "$RUNNEL" ] || RUNNEL=${CARGO_TARGET_DIR:-$HOME/.cache/runnel/target}/release/runnel
TANSU=${TANSU:-$HOME/.cache/runnel/tansu-0.6.0/tansu}
[ -x "$TANSU" ] || { echo "no tansu at $TANSU (the Kafka e2e tests fetch it)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "runnel run $WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BOOT=127.0.0.1:$PORT
"$TANSU" broker --listener-url "tcp://$BOOT" --advertised-listener-url "tcp://$BOOT" \
  --storage-engine memory://tansu/ > tansu.log 2>&1 &
for _ in $(seq 100); do grep -q 'ready in' tansu.log && break; sleep 0.1; done
