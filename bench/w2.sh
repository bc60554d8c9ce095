#!/usr/bin/env bash
# W2 (../shared/bench/README.md): http_server with the W1 steps into a file; the load
# client POSTs 200,000 events in batches of 100 NDJSON lines, 8 requests in flight.
#
#   bench/w2.sh [RUNS]     # default 3; prints each run (events/s acknowledged, p50/p99)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shared=${SHARED_BENCH:-../shared/bench}
data=bench/data
events=$data/events.ndjson
mkdir -p "$data"
[ -f "$events" ] || python3 "$shared/gen_events.py" 1000000 > "$events"
cargo build --release -q -p tightbeam -p tb-loadgen

port=${W2_PORT:-18081}
for run in $(seq "$runs"); do
  rm -f "$data/w2.out.ndjson"
  TIGHTBEAM_API=off TIGHTBEAM_HTTP="127.0.0.1:$port" OUT="$data/w2.out.ndjson" RUST_LOG=warn \
    target/release/tightbeam run -c examples/http-ingest.yaml &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo -n "run $run: "
  target/release/tb-loadgen --url "http://127.0.0.1:$port/" --file "$events" --count 200000 --batch 100 --concurrency 8
  kill -TERM "$pid"; wait "$pid" || true
  echo "        output holds $(wc -l < "$data/w2.out.ndjson") events (the non-debug ones)"
done
