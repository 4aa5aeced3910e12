#!/usr/bin/env bash
# Starts the Isame demo: three echo backends and a standalone data plane
# (isame-lb) on examples/standalone.yaml. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"

echo "building release binaries (the first build takes a few minutes)..."
cargo build --release --bin isame-lb --bin isame-echo

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

for i in 1 2 3; do
    ./target/release/isame-echo --listen "127.0.0.1:300$i" --name "backend-$i" &
    pids+=($!)
done
./target/release/isame-lb --config examples/standalone.yaml &
pids+=($!)

sleep 1
cat <<'TXT'

Isame is running:
  proxy      http://127.0.0.1:8080      curl -s localhost:8080/hello      (weights 3:2:1 over backend-1..3)
             http://127.0.0.1:8080/api  curl -s localhost:8080/api/users  (least connections)
  metrics    curl -s localhost:9090/metrics
  status     curl -s localhost:9090/status
Edit examples/standalone.yaml and save: the change applies at once (or send SIGHUP).
Ctrl-C stops everything.
TXT
wait
