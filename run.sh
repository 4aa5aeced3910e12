#!/usr/bin/env bash
# Starts the Isame demo: the control plane on an embedded SQLite file, three
# echo backends, and a data plane (isame-lb) subscribed to the control plane.
# examples/standalone.yaml is applied as the first version; every later
# change made through the REST API reaches the data plane at once.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"

echo "building release binaries (the first build takes a few minutes)..."
cargo build --release --bin isame-lb --bin isame-echo --bin isame-control-plane

state=target/demo
mkdir -p "$state"
token_file="$state/admin-token"
# The token and the database are readable by this user only.
umask 077
[ -s "$token_file" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token_file"
token=$(cat "$token_file")

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

ISAME_ADMIN_TOKEN="$token" ./target/release/isame-control-plane \
    --database-url "sqlite://$state/isame.db" &
pids+=($!)
for i in 1 2 3; do
    ./target/release/isame-echo --listen "127.0.0.1:300$i" --name "backend-$i" &
    pids+=($!)
done
for _ in $(seq 50); do
    curl -fs localhost:7070/healthz >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs -X PUT -H "Authorization: Bearer $token" -H 'X-Isame-Message: demo start' \
    --data-binary @examples/standalone.yaml localhost:7070/api/v1/config >/dev/null \
    || echo "could not apply the demo config to the control plane" >&2
ISAME_TOKEN="$token" ./target/release/isame-lb --control-plane http://127.0.0.1:7071 \
    --node-id demo-1 --cache-dir "$state/cache" --label env=demo &
pids+=($!)
for _ in $(seq 50); do
    curl -fs localhost:9090/ready >/dev/null 2>&1 && break
    sleep 0.1
done

cat <<TXT

Isame is running:
  proxy          curl -s localhost:8080/hello      (weights 3:2:1 over backend-1..3)
                 curl -s localhost:8080/api/users  (least connections)
  metrics        curl -s localhost:9090/metrics
  status         curl -s localhost:9090/status
  control plane  export ISAME_TOKEN=$token
                 curl -s -H "Authorization: Bearer \$ISAME_TOKEN" localhost:7070/api/v1/config
                 curl -s -H "Authorization: Bearer \$ISAME_TOKEN" localhost:7070/api/v1/nodes
  try a change   curl -s -X PATCH -H "Authorization: Bearer \$ISAME_TOKEN" -d '{"weight": 5}' \\
                      localhost:7070/api/v1/upstreams/web/backends/127.0.0.1:3002
                 (the data plane applies it at once: watch curl -s localhost:9090/status)
  whole file     curl -s -X PUT -H "Authorization: Bearer \$ISAME_TOKEN" \\
                      --data-binary @examples/standalone.yaml localhost:7070/api/v1/config
                 API description: localhost:7070/api/v1/openapi.json
Ctrl-C stops everything.
TXT
wait
