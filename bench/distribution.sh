#!/usr/bin/env bash
# Distribution benchmark: the release control plane pushing versions to
# subscribed data planes on loopback.
#
#   bench/distribution.sh [-v VERSIONS] [-u UPSTREAMS]
#
# 1. Time from a REST write to the ACK of every node, p50/p99, for 1, 10 and
#    100 subscribers (lightweight ones in one process: control-plane/examples/
#    fanout.rs, which ACK as soon as a snapshot is decoded).
# 2. Control-plane memory (RSS) with 0 and 100 nodes connected.
# 3. A config of U upstreams (default 10,000; 3 backends and a route each)
#    pushed to a real isame-lb: time from the write to its ACK, bytes of the
#    snapshot on the wire, and the data plane's memory before and after.
# 4. The same config with an upstream `web`: one weight change per version
#    to 100 fanout subscribers, as whole snapshots and then as deltas
#    (`fanout --deltas`): write -> all ACKed and bytes sent per node.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=50
UPSTREAMS=10000
while [ $# -gt 0 ]; do
    case "$1" in
        -v) VERSIONS="$2"; shift 2 ;;
        -u) UPSTREAMS="$2"; shift 2 ;;
        *) echo "usage: $0 [-v VERSIONS] [-u UPSTREAMS]" >&2; exit 2 ;;
    esac
done
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

cargo build --release --bin isame-control-plane --bin isame-lb >&2
cargo build --release -p isame-control-plane --example fanout >&2
CP=./target/release/isame-control-plane
LB=./target/release/isame-lb
FANOUT=./target/release/examples/fanout
TOKEN=bench-distribution-token-0123456789abcdef
API=127.0.0.1:17270
GRPC=127.0.0.1:17271

WORK=$(mktemp -d /tmp/isame-dist-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }
put() {
    curl -s -o "$WORK/put.out" -w '%{http_code}' -X PUT -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/yaml' --data-binary "@$1" "http://$API/api/v1/config"
}

ISAME_ADMIN_TOKEN=$TOKEN RUST_LOG=warn "$CP" --database-url "sqlite://$WORK/cp.db" \
    --api-listen "$API" --grpc-listen "$GRPC" 2>"$WORK/cp.log" &
CP_PID=$!
PIDS+=($CP_PID)
for _ in $(seq 100); do curl -fs "http://$API/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

cat > "$WORK/small.yaml" <<YAML
health: {enabled: false}
upstreams:
  - name: web
    backends: [http://127.0.0.1:3001, http://127.0.0.1:3002]
YAML
[ "$(put "$WORK/small.yaml")" = 200 ] || { cat "$WORK/put.out"; exit 1; }

echo "== distribution, $(nproc) CPUs, $VERSIONS versions per run"
echo "control plane with no node connected: VmRSS $(rss $CP_PID)"
for n in 1 10 100; do
    CP_PID=$CP_PID "$FANOUT" --api "$API" --grpc "$GRPC" --token "$TOKEN" --nodes "$n" --versions "$VERSIONS" \
        | grep -v '^subscribed'
    sleep 1
done

echo "== a $UPSTREAMS-upstream config pushed to isame-lb"
python3 - "$WORK/big.yaml" "$UPSTREAMS" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
out = ["health: {enabled: false}", "upstreams:"]
for i in range(n):
    out.append(f"  - name: svc-{i}")
    out.append(f"    backends: [http://10.{i // 62500}.{i // 250 % 250}.{i % 250}:8080, http://10.{i // 62500}.{i // 250 % 250}.{i % 250}:8081, http://10.{i // 62500}.{i // 250 % 250}.{i % 250}:8082]")
out.append("routes:")
for i in range(n):
    out.append(f"  - {{name: r-{i}, host: svc-{i}.example.com, upstream: svc-{i}}}")
open(path, "w").write("\n".join(out) + "\n")
PY
RUST_LOG=warn ISAME_TOKEN=$TOKEN "$LB" --control-plane "http://$GRPC" --node-id bench-lb \
    --cache-dir "$WORK/lb-cache" --listen 127.0.0.1:17280 --admin-listen 127.0.0.1:17281 \
    --workers 1 2>"$WORK/lb.log" &
LB_PID=$!
PIDS+=($LB_PID)
for _ in $(seq 100); do curl -fs http://127.0.0.1:17281/ready >/dev/null 2>&1 && break; sleep 0.1; done
echo "isame-lb on the small config: VmRSS $(rss $LB_PID)"
version_of_node() {
    curl -s -H "Authorization: Bearer $TOKEN" "http://$API/api/v1/nodes/bench-lb" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version") or 0)'
}
start=$(date +%s%N)
[ "$(put "$WORK/big.yaml")" = 200 ] || { cat "$WORK/put.out"; exit 1; }
committed=$(date +%s%N)
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$WORK/put.out")
until [ "$(version_of_node)" = "$want" ]; do sleep 0.01; done
acked=$(date +%s%N)
echo "PUT /config ($(($(wc -c < "$WORK/big.yaml") / 1024)) KiB YAML): $(( (committed - start) / 1000000 )) ms to commit, $(( (acked - start) / 1000000 )) ms to the node's ACK"
echo "snapshot on the wire: $(( $(stat -c %s "$WORK/lb-cache/snapshot.bin") / 1024 )) KiB (the cached snapshot: protobuf envelope, config as JSON)"
echo "isame-lb serving it: VmRSS $(rss $LB_PID)"
echo "control plane: VmRSS $(rss $CP_PID)"

echo "== one weight change in the $UPSTREAMS-upstream config, 100 nodes: whole snapshots, then deltas"
kill "$LB_PID" 2>/dev/null || true
wait "$LB_PID" 2>/dev/null || true
{ sed -n '1,2p' "$WORK/big.yaml"; echo "  - name: web"; echo "    backends: [http://127.0.0.1:3001, http://127.0.0.1:3002]"; sed -n '3,$p' "$WORK/big.yaml"; } >"$WORK/big-web.yaml"
[ "$(put "$WORK/big-web.yaml")" = 200 ] || { cat "$WORK/put.out"; exit 1; }
for mode in "" --deltas; do
    echo "-- fanout ${mode:-(whole snapshots)}"
    CP_PID=$CP_PID "$FANOUT" --api "$API" --grpc "$GRPC" --token "$TOKEN" --nodes 100 --versions 10 $mode \
        | grep -v '^subscribed'
    sleep 1
done
