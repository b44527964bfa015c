#!/usr/bin/env bash
# runnel and Flink on the same Nexmark queries, one after the other, same parallelism.
# usage: bench/flink/side_by_side.sh EVENTS PARALLELISM QUERY...
# Prints one line per query: runnel events/s and max RSS, Flink events/s (wall time from
# job submit, start-up included) and max RSS. Needs the release build and the Flink venv
# (see nexmark_flink.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
events=$1; p=$2; shift 2
runnel=${RUNNEL:-${CARGO_TARGET_DIR:-$HOME/.cache/runnel/target}/release/runnel}
py=${FLINK_PYTHON:-$HOME/.cache/runnel-bench/flink-venv/bin/python}
for q in "$@"; do
  r=$( { /usr/bin/time -f "rss_kb=%M" "$runnel" bench nexmark --query "$q" --events "$events" -p "$p"; } 2>&1 )
  f=$( { /usr/bin/time -f "rss_kb=%M" "$py" bench/flink/nexmark_flink.py "$q" --events "$events" -p "$p"; } 2>&1 )
  rr=$(grep -o 'events_per_s=[0-9]*' <<<"$r" | tail -1 | cut -d= -f2)
  rm=$(grep -o 'rss_kb=[0-9]*' <<<"$r" | tail -1 | cut -d= -f2)
  fr=$(grep -o 'events_per_s=[0-9]*' <<<"$f" | tail -1 | cut -d= -f2)
  fs=$(grep -o 'seconds=[0-9.]*' <<<"$f" | tail -1 | cut -d= -f2)
  fm=$(grep -o 'rss_kb=[0-9]*' <<<"$f" | tail -1 | cut -d= -f2)
  echo "$q runnel_events_per_s=${rr:-FAILED} runnel_rss_mb=$(( ${rm:-0} / 1024 )) flink_events_per_s=${fr:-FAILED} flink_seconds=${fs:-?} flink_rss_mb=$(( ${fm:-0} / 1024 ))"
done
