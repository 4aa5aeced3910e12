#!/usr/bin/env bash
# The quickstart: builds release binaries, then starts a control plane on an
# embedded SQLite file, three demo backends and two data planes (isame-lb)
# subscribed to it, applies examples/quickstart.yaml with isame-ctl, and
# prints what to try. Ctrl-C (or SIGTERM) stops everything.
#
# Environment (for tests and tinkering):
#   ISAME_BIN_DIR   use the binaries in this directory instead of building
#   ISAME_DEMO_DIR  where the database, tokens and caches live (target/demo)
set -euo pipefail
cd "$(dirname "$0")"

if [ -n "${ISAME_BIN_DIR:-}" ]; then
    bin="$ISAME_BIN_DIR"
else
    echo "building release binaries (the first build takes several minutes)..."
    cargo build --release --bin isame-lb --bin isame-echo --bin isame-control-plane --bin isame-ctl
    bin=target/release
fi
for b in isame-lb isame-echo isame-control-plane isame-ctl; do
    [ -x "$bin/$b" ] || { echo "run.sh: $bin/$b is missing" >&2; exit 1; }
done

# Every port the demo uses must be free: otherwise the checks below would
# talk to whatever holds it (an earlier run, the compose stack).
for port in 7070 7071 8080 8081 9090 9091 3001 3002 3003; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run.sh: port $port is in use; stop what listens there first" >&2
        exit 1
    fi
done

state="${ISAME_DEMO_DIR:-target/demo}"
mkdir -p "$state"
# The tokens, the database and the data planes' caches (which hold the
# config and any private keys) are readable by this user only.
umask 077
db="$state/isame.db"
admin_file="$state/admin-token"
node_file="$state/node-token"
[ -s "$admin_file" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$admin_file"
admin=$(cat "$admin_file")
# The data planes subscribe with a node token: it receives config, and no
# REST access. It is created once, with the database.
if [ ! -s "$node_file" ] || [ ! -e "$db" ]; then
    rm -f "$node_file"
    if ! "$bin/isame-control-plane" --database-url "sqlite://$db" \
        token create --name "demo-nodes-$(date +%s)" --role node > "$node_file.tmp" 2>"$state/token.log"; then
        cat "$state/token.log" >&2
        rm -f "$node_file.tmp"
        exit 1
    fi
    mv "$node_file.tmp" "$node_file"
fi
node_token=$(cat "$node_file")

pids=()
lb_pids=()
# Stops every process started here; a signal is a clean stop (exit 0), any
# other way out keeps its status.
cleanup() {
    local rc=$1
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stopped."
    exit "$rc"
}
trap 'cleanup 0' INT TERM
trap 'cleanup $?' EXIT

wait_for() { # URL PID LOG: until URL answers 2xx (at most 10 s) while PID runs
    for _ in $(seq 100); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "run.sh: the process behind $1 exited; its log, $3:" >&2
            tail -n 20 "$3" >&2
            return 1
        fi
        curl -fs -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: $1 did not answer; see $3" >&2
    return 1
}

ISAME_ADMIN_TOKEN="$admin" "$bin/isame-control-plane" --database-url "sqlite://$db" \
    > "$state/control-plane.log" 2>&1 &
cp_pid=$!
pids+=($cp_pid)
for i in 1 2 3; do
    "$bin/isame-echo" --listen "127.0.0.1:300$i" --name "backend-$i" &
    pids+=($!)
done
wait_for http://127.0.0.1:7070/healthz "$cp_pid" "$state/control-plane.log"

export ISAME_SERVER=http://127.0.0.1:7070
ISAME_TOKEN="$admin" "$bin/isame-ctl" apply -f examples/quickstart.yaml -m "quickstart" >/dev/null

for n in 1 2; do
    ISAME_TOKEN="$node_token" "$bin/isame-lb" --control-plane http://127.0.0.1:7071 \
        --node-id "demo-$n" --cache-dir "$state/cache-$n" --label env=demo \
        --label "stage=$([ "$n" = 1 ] && echo canary || echo main)" \
        --listen "127.0.0.1:808$((n - 1))" --admin-listen "127.0.0.1:909$((n - 1))" \
        > "$state/lb-$n.log" 2>&1 &
    lb_pids+=($!)
    pids+=($!)
done
wait_for http://127.0.0.1:9090/ready "${lb_pids[0]}" "$state/lb-1.log"
wait_for http://127.0.0.1:9091/ready "${lb_pids[1]}" "$state/lb-2.log"

ctl="$bin/isame-ctl"
[ "$bin" = target/release ] && ctl=./target/release/isame-ctl
cat <<TXT

Isame is running: a control plane, two data planes, three backends.
  proxy          curl -s localhost:8080/hello       (data plane demo-1; weights 3:2:1 over backend-1..3)
                 curl -s localhost:8081/api/users   (data plane demo-2; least connections)
  metrics        curl -s localhost:9090/metrics     (demo-1; demo-2 on 9091)
  node status    curl -s localhost:9090/status
  dashboard      http://localhost:7070/   (sign in with the admin token below)
  control plane  REST API under localhost:7070/api/v1, /metrics, /api/v1/openapi.json
  try isame-ctl  export ISAME_TOKEN=$admin
                 $ctl status
                 $ctl get upstreams
                 $ctl backend weight web 127.0.0.1:3002 5 -m "more to backend-2"
                 $ctl history
                 edit examples/quickstart.yaml, then
                 $ctl diff -f examples/quickstart.yaml
                 $ctl apply -f examples/quickstart.yaml -m "why"
  staged rollout $ctl rollout policy set -f examples/rollouts/policy.yaml   (demo-1 is the canary)
                 $ctl apply -f examples/quickstart.yaml --wait            (demo-1 first; exit 0 or 3)
                 $ctl rollout status
  logs           $state/*.log
Ctrl-C stops everything.
TXT
# Waits until a signal arrives (or every process has exited).
wait
