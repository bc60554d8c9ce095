#!/usr/bin/env bash
# W5 (../shared/bench/README.md): RabbitMQ in (prefetch 1000), the W1 steps, RabbitMQ out with
# publisher confirms, the source acking after the confirm; 200,000 events. Each run measures,
# side by side, the broker's own limit (tb-amqp relay: the same client crate moving the same
# messages queue to queue with confirms and acks, no processing) and Tightbeam (from its start
# until the output queue holds every non-debug event), and prints the ratio.
#
#   bench/w5.sh [RUNS]        # RabbitMQ on 127.0.0.1:5672 (guest/guest), or AMQP_URL
source "$(dirname "$0")/events.sh"
runs=${1:-3}
tightbeam=${TIGHTBEAM_BIN:-target/release/tightbeam}
amqp=${AMQP_BIN:-target/release/tb-amqp}
[ -n "${TIGHTBEAM_BIN:-}" ] || cargo build --release -q -p tightbeam -p tb-loadgen
count=${COUNT:-200000}
expect=$(head -n "$count" "$events" | grep -vc '"kind":"debug"')
url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

for run in $(seq "$runs"); do
  "$amqp" --url "$url" fill --queue w5_ref_in --file "$events" --count "$count" > /dev/null
  "$amqp" --url "$url" fill --queue w5_ref_out --file /dev/null --count 0 > /dev/null
  reference=$("$amqp" --url "$url" relay --from w5_ref_in --to w5_ref_out --count "$count")
  reference_rate=$(sed -E 's/.*: ([0-9]+) messages\/s/\1/' <<< "$reference")

  "$amqp" --url "$url" fill --queue w5_in --file "$events" --count "$count" > /dev/null
  "$amqp" --url "$url" fill --queue w5_out --file /dev/null --count 0 > /dev/null
  start_us=$(date +%s%6N)
  AMQP_URL="$url" RUST_LOG=warn "$tightbeam" run -c bench/w5.toml &
  pid=$!
  drained=$("$amqp" --url "$url" drain --queue w5_out --count "$expect")
  kill -TERM "$pid"; wait "$pid" || true
  last_us=$(sed -E 's/.*last at ([0-9]+) us.*/\1/' <<< "$drained")
  awk -v n="$count" -v a="$start_us" -v b="$last_us" -v ref="$reference_rate" -v run="$run" \
    'BEGIN { rate = n / ((b - a) / 1e6); printf "run %d: broker limit (relay, no processing) %d messages/s; tightbeam %d events in %.2f s: %.0f events/s (%.0f%% of the limit)\n", run, ref, n, (b - a) / 1e6, rate, 100 * rate / ref }'
done
