#!/usr/bin/env bash
# W3 (../shared/bench/README.md): http_server, the W1 steps, an `http` destination; the load
# client POSTs 200,000 events in batches of 100 NDJSON lines, 8 requests in flight, and the
# receiver answers 200 at once. Prints events/s end to end (from the first POST until the
# receiver has every event) and, at a fixed rate, p99 from ingest to receipt.
#
#   bench/w3.sh [RUNS]                 # batches of 100 jobs per request, SQLite store
#   BATCH=1 CONCURRENCY=64 bench/w3.sh # one request per job, 64 requests in flight
#   STORE=postgres bench/w3.sh         # the PostgreSQL store on 127.0.0.1:5432 (database test)
#   PG_OPTIONS='&sslmode=disable' STORE=postgres bench/w3.sh   # ... without TLS (default: prefer)
#   RATE=10000 bench/w3.sh             # a fixed 10,000 events/s, for the latency percentiles
source "$(dirname "$0")/events.sh"
runs=${1:-3}
tightbeam=${TIGHTBEAM_BIN:-target/release/tightbeam}
loadgen=${LOADGEN_BIN:-target/release/tb-loadgen}
receiver=${RECEIVER_BIN:-target/release/tb-receiver}
[ -n "${TIGHTBEAM_BIN:-}" ] || cargo build --release -q -p tightbeam -p tb-loadgen
count=${COUNT:-200000}
expect=$(head -n "$count" "$events" | grep -vc '"kind":"debug"')
port=${W3_PORT:-18091}
receiver_port=${W3_RECEIVER_PORT:-18092}
export BATCH=${BATCH:-100}
rate_args=()
[ -n "${RATE:-}" ] && rate_args=(--rate "$RATE" --stamp)

for run in $(seq "$runs"); do
  rm -rf "$data/w3"
  mkdir -p "$data/w3"
  case "${STORE:-sqlite}" in
    sqlite) store="sqlite://$data/w3/jobs.db" ;;
    postgres)
      schema="w3_$$_$run"
      store="postgres://postgres@127.0.0.1:5432/test?schema=$schema${PG_OPTIONS:-}" ;;
  esac
  "$receiver" --address "127.0.0.1:$receiver_port" --expect "$expect" > "$data/w3.receiver" &
  receiver_pid=$!
  DATA_DIR="$data/w3" STORE="$store" TIGHTBEAM_HTTP="127.0.0.1:$port" \
    RECEIVER="127.0.0.1:$receiver_port" RUST_LOG=warn "$tightbeam" run -c bench/w3.toml &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  start_us=$(date +%s%6N)
  echo -n "run $run (${STORE:-sqlite}, $BATCH jobs per request${RATE:+, $RATE events/s}): ingest: "
  "$loadgen" --url "http://127.0.0.1:$port/" --file "$events" --count "$count" --batch 100 \
    --concurrency 8 "${rate_args[@]}"
  wait "$receiver_pid"
  last_us=$(sed -E 's/.*last at ([0-9]+) us.*/\1/' "$data/w3.receiver")
  echo "        delivered: $(cat "$data/w3.receiver")"
  awk -v n="$expect" -v a="$start_us" -v b="$last_us" \
    'BEGIN { printf "        end to end: %d events in %.2f s: %.0f events/s\n", n, (b - a) / 1e6, n / ((b - a) / 1e6) }'
  kill -TERM "$pid"; wait "$pid" || true
  if [ "${STORE:-sqlite}" = postgres ]; then
    psql -h 127.0.0.1 -U postgres -d test -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null
  fi
done
