#!/usr/bin/env bash
# W1 (../shared/bench/README.md): 1,000,000 standard events, file to file through the W1
# steps, beside the single-thread serde_json floor in the same run.
#
#   bench/w1.sh [RUNS]        # default 3 runs each; prints every run and the medians
#   W1_CONFIG=examples/file-pipeline-lanes.toml bench/w1.sh   # W1 with a partition in 2 lanes
#   TIGHTBEAM_BIN=/other/build/tightbeam bench/w1.sh         # another build, for before/after
#
# Prints events/s (1,000,000 / wall), CPU seconds (user + sys) and peak RSS for each.
source "$(dirname "$0")/events.sh"
runs=${1:-3}
count=1000000

config=${W1_CONFIG:-examples/file-pipeline.toml}
tightbeam=${TIGHTBEAM_BIN:-target/release/tightbeam}
[ -n "${TIGHTBEAM_BIN:-}" ] || cargo build --release -q -p tightbeam
CARGO_TARGET_DIR="$PWD/$data/floor-target" cargo build --release -q --manifest-path "$shared/floor/Cargo.toml"
floor="$data/floor-target/release/floor"

measure() { # name, command...: prints "name events/s cpu_s peak_rss_mb"
  local name=$1; shift
  local stats
  stats=$( { /usr/bin/time -f "%e %U %S %M" "$@" > /dev/null; } 2>&1 | tail -1 )
  read -r wall user sys rss_kb <<< "$stats"
  awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss_kb" -v c="$count" \
    'BEGIN { printf "%-10s %10.0f events/s  %6.2f cpu-s  %6.1f MB peak RSS  (%.2f s wall)\n", n, c / w, u + s, r / 1024, w }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

tb_results=(); floor_results=()
for run in $(seq "$runs"); do
  line=$(measure floor "$floor" < "$events")
  echo "run $run: $line"; floor_results+=("$(awk '{print $2}' <<< "$line")")
  line=$(IN=$events OUT=$data/w1.out.ndjson REJECTS=$data/w1.rejects.ndjson measure tightbeam \
    "$tightbeam" run -c "$config")
  echo "run $run: $line"; tb_results+=("$(awk '{print $2}' <<< "$line")")
done
kept=$(wc -l < "$data/w1.out.ndjson")
echo "tightbeam wrote $kept events (expected 899948)"
floor_median=$(printf '%s\n' "${floor_results[@]}" | median)
tb_median=$(printf '%s\n' "${tb_results[@]}" | median)
awk -v t="$tb_median" -v f="$floor_median" \
  'BEGIN { printf "median: tightbeam %.0f events/s, floor %.0f events/s, ratio %.2f\n", t, f, t / f }'
