# Sourced by the bench scripts: the repository root as working directory, and the standard
# events (../shared/bench/gen_events.py, 1,000,000 of them) in bench/data/events.ndjson.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_BENCH:-../shared/bench}
data=bench/data
events=$data/events.ndjson
mkdir -p "$data"
[ -f "$events" ] || python3 "$shared/gen_events.py" 1000000 > "$events"
