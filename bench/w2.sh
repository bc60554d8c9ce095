#!/usr/bin/env bash
# W2 (../shared/bench/README.md): http_server with the W1 steps into a file; the load
# client POSTs 200,000 events in batches of 100 NDJSON lines, 8 requests in flight.
#
#   bench/w2.sh [RUNS]     # default 3; prints each run (events/s acknowledged, p50/p99)
#   RELOADS=20 bench/w2.sh # also reconciles one changed transform 20 times under the load,
#                          # printing the reconcile time (p50, p99) from PUT /api/v1/config
#   TIGHTBEAM_BIN=/other/build/tightbeam LOADGEN_BIN=... bench/w2.sh   # another build
source "$(dirname "$0")/events.sh"
runs=${1:-3}
tightbeam=${TIGHTBEAM_BIN:-target/release/tightbeam}
loadgen=${LOADGEN_BIN:-target/release/tb-loadgen}
[ -n "${TIGHTBEAM_BIN:-}" ] || cargo build --release -q -p tightbeam -p tb-loadgen
reloads=${RELOADS:-0}
api_port=${W2_API_PORT:-18082}
api=off
[ "$reloads" -gt 0 ] && api="127.0.0.1:$api_port"

# Pushes the W2 config with a transform that differs each time; prints each reconcile's ms.
reload_loop() {
  for n in $(seq "$reloads"); do
    sed -e "s/.processed = true/.processed = $n/" \
        -e "s|\${TIGHTBEAM_API:-127.0.0.1:7878}|$api|" \
        -e "s|\${TIGHTBEAM_HTTP:-127.0.0.1:8081}|127.0.0.1:$port|" \
        -e "s|\${OUT:-out/ingest.ndjson}|$data/w2.out.ndjson|" examples/http-ingest.yaml |
      curl -s -X PUT -H 'content-type: application/yaml' --data-binary @- \
        "http://$api/api/v1/config" | python3 -c 'import json,sys; print(json.load(sys.stdin)["took_ms"])'
    sleep 0.02
  done
}

port=${W2_PORT:-18081}
for run in $(seq "$runs"); do
  rm -f "$data/w2.out.ndjson"
  TIGHTBEAM_API=$api TIGHTBEAM_HTTP="127.0.0.1:$port" OUT="$data/w2.out.ndjson" RUST_LOG=warn \
    "$tightbeam" run -c examples/http-ingest.yaml &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo -n "run $run: "
  if [ "$reloads" -gt 0 ]; then
    reload_loop > "$data/w2.reloads" &
    reloader=$!
  fi
  "$loadgen" --url "http://127.0.0.1:$port/" --file "$events" --count 200000 --batch 100 --concurrency 8
  if [ "$reloads" -gt 0 ]; then
    wait "$reloader"
    sort -n "$data/w2.reloads" | awk '{ v[NR] = $1 } END {
      printf "        %d reconciles of one changed transform under load: p50 %.2f ms, p99 %.2f ms\n",
        NR, v[int((NR + 1) / 2)], v[int(NR * 0.99 + 0.99)] }'
  fi
  kill -TERM "$pid"; wait "$pid" || true
  echo "        output holds $(wc -l < "$data/w2.out.ndjson") events (the non-debug ones)"
done
