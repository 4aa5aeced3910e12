#!/usr/bin/env bash
# Control-plane benchmark: how fast the REST API applies, serves and changes
# configs, on the real binary with its SQLite file (WAL, synchronous=FULL)
# on this machine's disk.
#
#   bench/control-plane.sh [-n UPSTREAMS] [-d SECONDS] [-r RUNS]
#
# Prints, for a config of N upstreams (3 backends each) and N routes:
#   apply        PUT /config of the whole config into an empty store, then
#                of a copy with one weight changed, then of an identical copy
#                (no version): median and max of RUNS tries each
#   GET /config  latency p50/p99 and requests/s (wrk, 8 connections)
#   writes/s     PATCH of one backend's weight, each a new version (wrk,
#                4 connections), on the N-upstream config and on a small one
set -euo pipefail
cd "$(dirname "$0")/.."

N=1000
DURATION=5
RUNS=5
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N="$2"; shift 2 ;;
        -d) DURATION="$2"; shift 2 ;;
        -r) RUNS="$2"; shift 2 ;;
        *) echo "usage: $0 [-n UPSTREAMS] [-d SECONDS] [-r RUNS]" >&2; exit 2 ;;
    esac
done

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian..." >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need[@]}" >/dev/null
    }
fi

cargo build --release --bin isame-control-plane >&2
CP=./target/release/isame-control-plane
TOKEN=bench-admin-token-0123456789abcdef0123456
ADDR=127.0.0.1:17170
BASE=http://$ADDR/api/v1

WORK=$(mktemp -d /tmp/isame-cp-bench.XXXXXX)
PID=""
cleanup() {
    [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# gen_config FILE UPSTREAMS FIRST_WEIGHT
gen_config() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
path, n, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = ["service: bench", "health:", "  enabled: false", "upstreams:"]
for i in range(n):
    out.append(f"  - name: svc-{i}")
    out.append("    algorithm: weighted_round_robin")
    out.append("    backends:")
    for j in range(3):
        weight = w if (i, j) == (0, 0) else 1 + j
        out.append(f"      - url: http://10.{i // 250}.{i % 250}.{j + 1}:8080")
        out.append(f"        weight: {weight}")
out.append("routes:")
for i in range(n):
    out.append(f"  - name: r-{i}")
    out.append(f"    host: svc-{i}.example.com")
    out.append(f"    upstream: svc-{i}")
open(path, "w").write("\n".join(out) + "\n")
PY
}

start_cp() {
    rm -f "$WORK"/isame.db*
    ISAME_ADMIN_TOKEN=$TOKEN RUST_LOG=warn "$CP" --database-url "sqlite://$WORK/isame.db" \
        --api-listen "$ADDR" 2>"$WORK/cp.log" &
    PID=$!
    for _ in $(seq 100); do
        curl -fs "http://$ADDR/healthz" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "control plane did not start" >&2; cat "$WORK/cp.log" >&2; exit 1
}
stop_cp() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

# put FILE -> prints "seconds status"
put() {
    curl -s -o "$WORK/put.out" -w '%{time_total} %{http_code}' -X PUT \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/yaml' \
        --data-binary "@$1" "$BASE/config"
}

median_max() { sort -n | awk '{a[NR]=$1} END {printf "median %.1f ms, max %.1f ms", a[int((NR+1)/2)]*1000, a[NR]*1000}'; }

gen_config "$WORK/big.yaml" "$N" 1
gen_config "$WORK/big2.yaml" "$N" 7
gen_config "$WORK/small.yaml" 2 1
size=$(wc -c < "$WORK/big.yaml")

echo "== control plane, $N upstreams x 3 backends + $N routes ($((size / 1024)) KiB of YAML), $(nproc) CPUs"

first=(); change=(); same=()
for _ in $(seq "$RUNS"); do
    start_cp
    read -r t code <<<"$(put "$WORK/big.yaml")"; [ "$code" = 200 ] || { cat "$WORK/put.out"; exit 1; }; first+=("$t")
    read -r t code <<<"$(put "$WORK/big2.yaml")"; [ "$code" = 200 ] || { cat "$WORK/put.out"; exit 1; }; change+=("$t")
    read -r t code <<<"$(put "$WORK/big2.yaml")"; [ "$code" = 200 ] || { cat "$WORK/put.out"; exit 1; }; same+=("$t")
    grep -q '"created":false' "$WORK/put.out" || { echo "identical apply created a version" >&2; exit 1; }
    stop_cp
done
echo "apply, empty store -> $N upstreams:  $(printf '%s\n' "${first[@]}" | median_max)"
echo "apply, one weight changed:          $(printf '%s\n' "${change[@]}" | median_max)"
echo "apply, identical (no version):      $(printf '%s\n' "${same[@]}" | median_max)"

start_cp
put "$WORK/big.yaml" >/dev/null
body=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/config" | wc -c)
echo "GET /config ($((body / 1024)) KiB of JSON):"
wrk -t 2 -c 8 -d "${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "$BASE/config" \
    | awk '/Requests\/sec/ {printf "  %s req/s", $2} / 50%/ {p50=$2} / 99%/ {p99=$2} END {printf ", p50 %s, p99 %s\n", p50, p99}'

cat > "$WORK/patch.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  return wrk.format("PATCH", "/api/v1/upstreams/svc-1/backends/10.0.1.1:8080",
    {["Authorization"] = "Bearer $TOKEN", ["Content-Type"] = "application/json"},
    '{"weight": ' .. (n % 997 + 2) .. '}')
end
local bad = 0
response = function(status) if status ~= 200 then bad = bad + 1 end end
done = function() if bad > 0 then io.write("  non-200 answers: " .. bad .. "\n") end end
LUA
writes() {
    wrk -t 1 -c 4 -d "${DURATION}s" --latency -s "$WORK/patch.lua" "http://$ADDR" \
        | awk '/Requests\/sec/ {printf "%s writes/s", $2} / 50%/ {p50=$2} / 99%/ {p99=$2} /non-200/ {print; exit 1} END {printf ", p50 %s, p99 %s\n", p50, p99}'
}
before=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/versions?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["versions"][0]["version"])')
echo "REST writes on the $N-upstream config: $(writes)"
after=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/versions?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["versions"][0]["version"])')
echo "  ($((after - before)) versions committed, each one fsync'd transaction)"
stop_cp

start_cp
put "$WORK/small.yaml" >/dev/null
echo "REST writes on a 2-upstream config:     $(writes)"
echo "database size after the runs: $(du -sh "$WORK" | cut -f1)"
