#!/usr/bin/env bash
# Every fuzz target for a bounded time, on a stable toolchain, as CI runs them (.ci/run):
# built with libFuzzer's coverage instrumentation through the `instrument` compiler
# wrapper (no nightly, no cargo-fuzz), then each run for FUZZ_SECONDS (20) on a copy of its
# seeds, FUZZ_JOBS (2) at a time. Fails on a crash, a timeout or running out of memory,
# and prints the input that did it. Run from anywhere: bash fuzz/smoke.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-2}
target_dir=${FUZZ_TARGET_DIR:-$PWD/../target/fuzz-ci}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(awk '$1 == "name" && $3 != "\"patgate-fuzz\"" { gsub(/"/, "", $3); print $3 }' Cargo.toml)
fi

started=$SECONDS
RUSTC_WRAPPER="$PWD/instrument" CARGO_TARGET_DIR="$target_dir" cargo build --quiet --profile fuzz-ci --bins
echo "built ${#targets[@]} targets in $((SECONDS - started)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {
  local t=$1 dir=$work/$1
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp seeds/"$t"/* "$dir/corpus/"
  local status=0
  "$target_dir/fuzz-ci/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log" 2>&1 || status=$?
  echo "$status" >"$dir/status"
}

for t in "${targets[@]}"; do
  [ -d "seeds/$t" ] || { echo "no seeds for $t (fuzz/seeds/$t)" >&2; exit 1; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run "$t" &
done
wait

failed=0
for t in "${targets[@]}"; do
  dir=$work/$t
  status=$(cat "$dir/status")
  runs=$(grep -m 1 -oE 'Done [0-9]+ runs in [0-9]+ second' "$dir/log" || true)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$dir/log" | tail -n 1 || true)
  if [ "$status" = 0 ]; then
    echo "$t: ok, ${runs:-no run count}s, $cov"
    continue
  fi
  failed=1
  echo "$t: FAILED (libFuzzer exit $status)" >&2
  grep -v -E '^#[0-9]+\s' "$dir/log" | tail -n 60 >&2
  for a in "$dir"/artifacts/*; do
    [ -e "$a" ] || continue
    echo "input $(basename "$a") ($(wc -c <"$a") bytes), base64: $(base64 -w 0 "$a")" >&2
    od -An -c "$a" | head -n 20 >&2
    echo "replay: echo '$(base64 -w 0 "$a")' | base64 -d > crash && $target_dir/fuzz-ci/$t crash" >&2
  done
done
echo "fuzzed ${#targets[@]} targets for ${seconds} s each in $((SECONDS - started)) s"
exit "$failed"
