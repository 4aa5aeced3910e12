#!/usr/bin/env bash
# Replicas benchmark: commit -> every node ACKed, with the nodes spread over
# two control-plane replicas on one PostgreSQL database and the writes made
# on one of them, next to one control plane on SQLite (all release builds,
# loopback, lightweight subscribers from control-plane/examples/fanout.rs).
#
#   bench/replicas.sh [-v VERSIONS]
#
# PostgreSQL comes from Debian's package (installed when missing by
# testkit/scripts/ensure-postgres.sh): a throwaway cluster in a temporary
# directory on a free loopback port, with durable commits (fsync on, as in
# production), stopped and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=50
while [ $# -gt 0 ]; do
    case "$1" in
        -v) VERSIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [-v VERSIONS]" >&2; exit 2 ;;
    esac
done
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
bash testkit/scripts/ensure-postgres.sh
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

cargo build --release --bin isame-control-plane >&2
cargo build --release -p isame-control-plane --example fanout >&2
CP=./target/release/isame-control-plane
FANOUT=./target/release/examples/fanout
TOKEN=bench-replicas-token-0123456789abcdef

WORK=$(mktemp -d /tmp/isame-replicas-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PGDATA="$WORK/pg"
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -d "$PGDATA" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir "$PGDATA"
[ "$(id -u)" -eq 0 ] && chown postgres: "$PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U isame --auth=trust -E UTF8 --locale=C >/dev/null
PGPORT=$(free_port)
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-h 127.0.0.1 -p $PGPORT -k $PGDATA" start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U isame isame
PG_URL="postgres://isame@127.0.0.1:$PGPORT/isame"

start_cp() { # URL API GRPC
    ISAME_ADMIN_TOKEN=$TOKEN RUST_LOG=warn "$CP" --database-url "$1" \
        --api-listen "$2" --grpc-listen "$3" 2>>"$WORK/cp.log" &
    PIDS+=($!)
    for _ in $(seq 100); do curl -fs "http://$2/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "control plane on $2 did not start" >&2; cat "$WORK/cp.log" >&2; exit 1
}
seed() { # API
    printf 'health: {enabled: false}\nupstreams:\n  - name: web\n    backends: [http://127.0.0.1:3001, http://127.0.0.1:3002]\n' >"$WORK/small.yaml"
    code=$(curl -s -o "$WORK/put.out" -w '%{http_code}' -X PUT -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/yaml' --data-binary "@$WORK/small.yaml" "http://$1/api/v1/config")
    [ "$code" = 200 ] || { cat "$WORK/put.out"; exit 1; }
}
ports() { echo "127.0.0.1:$(free_port)"; }

echo "== commit -> all ACKed, $(nproc) CPUs, $VERSIONS versions per run"
echo "-- one control plane on SQLite"
S_API=$(ports); S_GRPC=$(ports)
start_cp "sqlite://$WORK/cp.db" "$S_API" "$S_GRPC"
seed "$S_API"
for n in 10 100; do
    "$FANOUT" --api "$S_API" --grpc "$S_GRPC" --token "$TOKEN" --nodes "$n" --versions "$VERSIONS" \
        | grep -v '^subscribed'
    sleep 1
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${PIDS[@]}" 2>/dev/null || true
PIDS=()

echo "-- two replicas on PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), writes on A, nodes half on A and half on B"
A_API=$(ports); A_GRPC=$(ports); B_API=$(ports); B_GRPC=$(ports)
start_cp "$PG_URL" "$A_API" "$A_GRPC"
start_cp "$PG_URL" "$B_API" "$B_GRPC"
seed "$A_API"
for n in 10 100; do
    "$FANOUT" --api "$A_API" --grpc "$A_GRPC,$B_GRPC" --token "$TOKEN" --nodes "$n" --versions "$VERSIONS" \
        | grep -v '^subscribed'
    sleep 1
done
echo "-- the same, every node on B (each version crosses from A to B)"
for n in 10 100; do
    "$FANOUT" --api "$A_API" --grpc "$B_GRPC" --token "$TOKEN" --nodes "$n" --versions "$VERSIONS" \
        | grep -v '^subscribed'
    sleep 1
done
