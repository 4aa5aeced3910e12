#!/usr/bin/env bash
# WebSocket benchmark: nginx against isame-lb, one worker each, relaying
# WebSockets to the same echo backend (`isame-echo --ws`). `isame-wsload`
# keeps CONNECTIONS WebSockets busy: on each, a message, its echo, the
# next message, for a bounded time. Every message crosses the proxy twice.
#
# Prints echoed messages/s, each proxy's CPU time per echoed message (from
# /proc) and the isame/nginx ratios (medians of per-round ratios; each
# round measures nginx then isame back to back).
#
#   bench/websocket.sh [-d SECONDS] [-c CONNECTIONS] [-s MESSAGE_BYTES] [-r ROUNDS] [--no-pin]
#
# ISAME_LB=path/to/isame-lb measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=4
CONNS=50
SIZE=64
ROUNDS=7
PIN=1
while [ $# -gt 0 ]; do
    case "$1" in
        -d) DURATION="$2"; shift 2 ;;
        -c) CONNS="$2"; shift 2 ;;
        -s) SIZE="$2"; shift 2 ;;
        -r) ROUNDS="$2"; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        *) echo "usage: $0 [-d SECONDS] [-c CONNECTIONS] [-s MESSAGE_BYTES] [-r ROUNDS] [--no-pin]" >&2; exit 2 ;;
    esac
done

. bench/lib.sh
need_debian nginx:nginx curl:curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ISAME=${ISAME_LB:-./target/release/isame-lb}

cargo build --release --bin isame-lb --bin isame-echo --bin isame-wsload >&2

pin_cpus "$PIN"

WORK=$(mktemp -d /tmp/isame-ws-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

BACKEND=127.0.0.1:18096
$LOAD_CPU ./target/release/isame-echo --ws --threads 1 --listen "$BACKEND" 2>/dev/null &
PIDS+=($!)

mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:18097;
        location / {
            proxy_pass http://$BACKEND;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_read_timeout 3600s;
        }
    }
}
CONF
$PROXY_CPU "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!

cat > "$WORK/isame.yaml" <<CONF
upstreams:
  - name: bench
    backends: ["http://$BACKEND"]
health:
  enabled: false
metrics:
  enabled: true
CONF
RUST_LOG=warn $PROXY_CPU "$ISAME" --config "$WORK/isame.yaml" \
    --listen 127.0.0.1:18098 --admin-listen 127.0.0.1:18099 --workers 1 \
    2>>"$WORK/isame.log" &
PIDS+=($!)
ISAME_PID=$!

for port in 18097 18098; do
    for _ in $(seq 50); do
        $LOAD_CPU ./target/release/isame-wsload --url "ws://127.0.0.1:$port/" \
            --connections 1 --duration 0.05 >/dev/null 2>&1 && break
        sleep 0.1
    done
done


# run NAME PORT PID: one measured run; prints "messages_per_s cpu_us_per_message"
run() {
    local url="ws://127.0.0.1:$2/" pid=$3 before after out
    $LOAD_CPU ./target/release/isame-wsload --url "$url" --connections "$CONNS" --size "$SIZE" --duration 1 >/dev/null
    before=$(cpu_ticks "$pid")
    out=$($LOAD_CPU ./target/release/isame-wsload --url "$url" --connections "$CONNS" --size "$SIZE" --duration "$DURATION")
    after=$(cpu_ticks "$pid")
    case "$out" in
        *errors=0) ;;
        *) echo "$out" >&2; echo "errors during the $1 run" >&2; exit 1 ;;
    esac
    echo "$out" | tr ' ' '\n' | awk -F= -v ticks=$((after - before)) -v tick="$TICK" '
        { v[$1] = $2 }
        END { printf "%.0f %.2f\n", v["messages"] / v["seconds"], ticks / tick * 1e6 / v["messages"] }'
}

echo "WebSocket echo: $CONNS connections, $SIZE-byte messages, ${DURATION}s, $ROUNDS rounds, pinning: $([ -n "$PROXY_CPU" ] && echo "proxies on CPU 1, load+backend on CPU 0" || echo off)" >&2
: > "$WORK/a.res"; : > "$WORK/b.res"
for r in $(seq "$ROUNDS"); do
    run nginx 18097 "$NGINX_PID" >> "$WORK/a.res"
    run isame-lb 18098 "$ISAME_PID" >> "$WORK/b.res"
    echo "round $r: nginx $(tail -1 "$WORK/a.res")  isame-lb $(tail -1 "$WORK/b.res")  (messages/s cpuµs/message)" >&2
done

curl -sf "http://127.0.0.1:18099/metrics" | grep -q '^isame_lb_tunnel_bytes_total' \
    || { echo "isame counted no tunnel bytes" >&2; exit 1; }

paste -d' ' "$WORK/a.res" "$WORK/b.res" | awk '
'"$AWK_MEDIAN"'
    { n++; for (k = 1; k <= 4; k++) col[k, n] = $k; r_rate[n] = $3 / $1; r_cpu[n] = $4 / $2 }
    END {
        for (k = 1; k <= 4; k++) { for (i = 1; i <= n; i++) v[i] = col[k, i]; m[k] = median(v, n) }
        printf "\n%-10s %12s %18s   (WebSocket echo, median of %d rounds)\n", "proxy", "messages/s", "CPU µs/message", n
        printf "%-10s %12.0f %18.2f\n", "nginx", m[1], m[2]
        printf "%-10s %12.0f %18.2f\n", "isame-lb", m[3], m[4]
        printf "ratio isame-lb / nginx (median of per-round ratios): messages/s %.2fx, CPU per message %.2fx\n", median(r_rate, n), median(r_cpu, n)
    }'
