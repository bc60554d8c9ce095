#!/usr/bin/env bash
# W5 (../shared/bench/README.md): a broker in, the W1 steps, the broker out, each message
# acknowledged to the broker only after its result was confirmed; 200,000 events.
#   BROKER=rabbitmq (the default): a queue in (prefetch 1000), publisher confirms out
#     (bench/w5.toml, tool tb-amqp);
#   BROKER=nats: a JetStream stream in (durable pull consumer, 1000 unacknowledged at most),
#     a stream out with publish acks (bench/w5-nats.toml, tool tb-nats).
# Each run measures, side by side, the broker's own limit (the tool's relay: the same client
# crate the connector uses moving the same messages in to out with confirms and acks, no
# processing) and Tightbeam (from its start until the output held every non-debug event),
# and prints the ratio.
#
#   bench/w5.sh [RUNS]    # RabbitMQ on 127.0.0.1:5672 (or AMQP_URL), NATS on :4222 (NATS_URL)
source "$(dirname "$0")/events.sh"
runs=${1:-3}
broker=${BROKER:-rabbitmq}
tightbeam=${TIGHTBEAM_BIN:-target/release/tightbeam}
[ -n "${TIGHTBEAM_BIN:-}" ] || cargo build --release -q -p tightbeam -p tb-loadgen
count=${COUNT:-200000}
expect=$(head -n "$count" "$events" | grep -vc '"kind":"debug"')

case "$broker" in
  rabbitmq)
    url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
    export AMQP_URL=$url
    tool() { target/release/tb-amqp --url "$url" "$@"; }
    fill() { tool fill --queue "$1" --file "$2" --count "$3"; }
    relay() { tool relay --from "$1" --to "$2" --count "$3"; }
    drain() { tool drain --queue "$1" --count "$2"; }
    config=bench/w5.toml; ref_in=w5_ref_in; ref_out=w5_ref_out; in=w5_in; out=w5_out ;;
  nats)
    url=${NATS_URL:-nats://127.0.0.1:4222}
    export NATS_URL=$url
    tool() { target/release/tb-nats --url "$url" "$@"; }
    fill() { tool fill --stream "$1" --file "$2" --count "$3"; }
    relay() { tool relay --from "$1" --to "$2" --count "$3"; }
    drain() { tool drain --stream "$1" --count "$2"; }
    config=bench/w5-nats.toml; ref_in=W5N_REF_IN; ref_out=W5N_REF_OUT; in=W5N_IN; out=W5N_OUT ;;
  *) echo "BROKER must be rabbitmq or nats" >&2; exit 2 ;;
esac

for run in $(seq "$runs"); do
  fill "$ref_in" "$events" "$count" > /dev/null
  fill "$ref_out" /dev/null 0 > /dev/null
  reference=$(relay "$ref_in" "$ref_out" "$count")
  reference_rate=$(sed -E 's/.*: ([0-9]+) messages\/s/\1/' <<< "$reference")

  fill "$in" "$events" "$count" > /dev/null
  fill "$out" /dev/null 0 > /dev/null
  start_us=$(date +%s%6N)
  RUST_LOG=warn "$tightbeam" run -c "$config" &
  pid=$!
  drained=$(drain "$out" "$expect")
  kill -TERM "$pid"; wait "$pid" || true
  last_us=$(sed -E 's/.*last at ([0-9]+) us.*/\1/' <<< "$drained")
  awk -v n="$count" -v a="$start_us" -v b="$last_us" -v ref="$reference_rate" -v run="$run" -v broker="$broker" \
    'BEGIN { rate = n / ((b - a) / 1e6); printf "run %d (%s): broker limit (relay, no processing) %d messages/s; tightbeam %d events in %.2f s: %.0f events/s (%.0f%% of the limit)\n", run, broker, ref, n, (b - a) / 1e6, rate, 100 * rate / ref }'
done
