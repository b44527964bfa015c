#!/usr/bin/env bash
# Runs one fuzz target: fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags…]
#   TARGET: log_recovery | json_decoder | csv_decoder | sql_frontend | ingest_request
#   (the last two link DataFusion and the HTTP server: their first build takes ~20 minutes)
# Builds with libFuzzer's coverage instrumentation on the stable toolchain (the flags
# cargo-fuzz passes, without a sanitizer), then fuzzes from fuzz/corpus/TARGET for
# SECONDS (default 60). New inputs land in the corpus; a crash is written to
# fuzz/artifacts/TARGET/ and makes the script fail.
set -euo pipefail
cd "$(dirname "$0")"
target="${1:?usage: fuzz/run.sh TARGET [SECONDS]}"
seconds="${2:-60}"
shift $(( $# > 1 ? 2 : 1 ))
export CARGO_TARGET_DIR="${RUNNEL_FUZZ_TARGET_DIR:-$HOME/.cache/runnel/fuzz-target}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the instrumentation off build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
features=()
case "$target" in sql_frontend|ingest_request) features=(--features heavy) ;; esac
cargo build --release --bin "$target" "${features[@]}" --target "$triple" --quiet
mkdir -p "corpus/$target" "artifacts/$target"
dict=()
if [ -f "$target.dict" ]; then dict=("-dict=$target.dict"); fi
# Temporary files (the log target makes a directory per input) on tmpfs when there is one.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
exec "$CARGO_TARGET_DIR/$triple/release/$target" "corpus/$target" \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="artifacts/$target/" "${dict[@]}" "$@"
