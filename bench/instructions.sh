#!/usr/bin/env bash
# User-space instructions per proxied request of isame-lb, counted by
# valgrind's callgrind: repeatable whatever else the machine is doing, so it
# shows the effect of a hot-path change that wall-clock runs would drown in
# noise. Kernel time (the syscalls) is not counted; bench/run.sh measures all.
#
# The load is wrk (HTTP/1.1 keep-alive, as in bench/run.sh) for SECONDS under
# valgrind; instructions are divided by the requests wrk completed.
#
#   bench/instructions.sh [SECONDS] [--annotate]
#
# What is measured can change:
#   EXTRA_YAML      appended to the config (its one upstream is `bench`),
#                   e.g. routes with middleware
#   UPSTREAM_YAML   more fields of the `bench` upstream, indented by four
#                   spaces, e.g. "    algorithm: consistent_hash"
#   BENCH_RUST_LOG  the log level (default warn), e.g. info for the access log
#   BENCH_LB_ARGS   extra isame-lb flags
#   BENCH_NO_BUILD  use the release binaries as they are
#   ISAME_LB        measure another isame-lb build (e.g. an older commit's)
# OTEL_* variables in the environment reach isame-lb (tracing on).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN=${1:-10}
ANNOTATE=${2:-}
for tool in valgrind wrk; do
    command -v $tool >/dev/null || {
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get install -y "$tool" >/dev/null
    }
done
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --bin isame-lb --bin isame-echo >&2

WORK=$(mktemp -d /tmp/isame-instr.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

./target/release/isame-echo --fast --listen 127.0.0.1:18090 2>/dev/null &
PIDS+=($!)
cat > "$WORK/isame.yaml" <<CONF
upstreams:
  - name: bench
    backends: ["http://127.0.0.1:18090"]
${UPSTREAM_YAML:-}
${EXTRA_YAML:-}
CONF
read -r -a EXTRA <<< "${BENCH_LB_ARGS:-}"
RUST_LOG=${BENCH_RUST_LOG:-warn} valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "${ISAME_LB:-./target/release/isame-lb}" --config "$WORK/isame.yaml" --listen 127.0.0.1:18091 \
    --admin-listen 127.0.0.1:18092 --workers 1 "${EXTRA[@]}" 2>"$WORK/valgrind.log" &
VG=$!
PIDS+=($VG)
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18091/ && break; sleep 0.2; done

wrk -t1 -c10 -d2s http://127.0.0.1:18091/ >/dev/null   # warm pools and caches
callgrind_control -z "$VG" >/dev/null
wrk -t1 -c10 -d"${SECONDS_RUN}s" http://127.0.0.1:18091/ > "$WORK/wrk.out"
callgrind_control -d "$VG" >/dev/null
if grep -q "Non-2xx\|Socket errors" "$WORK/wrk.out"; then cat "$WORK/wrk.out"; exit 1; fi
REQUESTS=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")

total=0
for f in "$WORK"/cg.*; do
    n=$(awk '/^totals:/ {print $2}' "$f")
    total=$((total + ${n:-0}))
done
echo "$REQUESTS requests: $total instructions, $((total / REQUESTS)) per request"
if [ "$ANNOTATE" = "--annotate" ]; then
    for f in "$WORK"/cg.*; do
        callgrind_annotate --inclusive=no "$f" 2>/dev/null | head -70
    done
fi
