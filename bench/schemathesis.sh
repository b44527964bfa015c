#!/usr/bin/env bash
# Property-based API testing of `runnel serve` with schemathesis, from its OpenAPI
# document, with and without a token:  bench/schemathesis.sh [EXAMPLES]
# Needs python3 with venv; installs schemathesis into ~/.cache/runnel/schemathesis.
set -euo pipefail
examples="${1:-80}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/runnel/target}/release/runnel"
venv="$HOME/.cache/runnel/schemathesis"
[ -x "$venv/bin/schemathesis" ] || {
  python3 -m venv "$venv"
  # schemathesis 3.39 breaks with the newest hypothesis releases.
  "$venv/bin/pip" install -q "schemathesis>=3.39,<4" "hypothesis<6.130"
}
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
token=0123456789abcdef0123
for mode in none token; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ "$mode" = token ]; then
    RUNNEL_AUTH_TOKEN=$token "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/$mode" --auto-create >/dev/null 2>&1 &
    auth=(-H "Authorization: Bearer $token")
  else
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/$mode" --auto-create >/dev/null 2>&1 &
    auth=()
  fi
  sleep 1
  echo "== $mode"
  "$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
    --base-url "http://127.0.0.1:$port" "${auth[@]}" --checks all \
    --hypothesis-max-examples "$examples" --hypothesis-seed=1 --request-timeout 5000 \
    | sed -n '/SUMMARY/,$p' || true
  kill %1 2>/dev/null || true
  wait 2>/dev/null || true
done
