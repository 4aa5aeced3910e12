#!/usr/bin/env bash
# What an idle client connection costs: nginx and isame-lb side by side, one
# worker each, in front of the same backend. For each mode, a fresh proxy is
# started, warmed with a few requests, and N connections are opened by
# isame-idle and left idle; the proxy's resident memory (VmRSS) before and
# after, divided by N, is the cost of one connection. It is read twice:
# "quiet", three seconds after the last connection went idle with nothing
# else happening, and "serving", after two more seconds of light traffic
# (4 connections) on the side, as on a node in service. The two differ for
# isame-lb because its allocator (mimalloc) hands freed pages back to the
# system lazily, when the worker next allocates: memory that served the
# burst of requests that opened the connections is free, but stays
# resident until then.
#
# Modes: http1 (one request on each connection, then keep-alive idle),
# silent (connected, nothing sent), http2 (one request over h2c with prior
# knowledge, then idle; isame-lb only: the nginx here speaks HTTP/1.1 on a
# plain port).
#
#   bench/idle_memory.sh [-n CONNECTIONS] [--modes "http1 silent http2"]
#
# ISAME_LB=path/to/isame-lb measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."

N=5000
MODES="http1 silent http2"
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N="$2"; shift 2 ;;
        --modes) MODES="$2"; shift 2 ;;
        *) echo "usage: $0 [-n CONNECTIONS] [--modes \"http1 silent http2\"]" >&2; exit 2 ;;
    esac
done

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian..." >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need[@]}" >/dev/null
    }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ISAME=${ISAME_LB:-./target/release/isame-lb}
cargo build --release --bin isame-lb --bin isame-echo --bin isame-idle >&2

# Each process (client, proxy) holds one descriptor per connection.
ulimit -n $((N + 1024)) 2>/dev/null || {
    echo "cannot raise the open-file limit to $((N + 1024)) (hard limit $(ulimit -Hn))" >&2
    exit 1
}

WORK=$(mktemp -d /tmp/isame-idle.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

BACKEND=127.0.0.1:19080
./target/release/isame-echo --fast --threads 1 --listen "$BACKEND" 2>/dev/null &
PIDS+=($!)

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# start_proxy nginx|isame PORT: sets PROXY_PID (the process that serves).
start_proxy() {
    local kind=$1 port=$2
    case "$kind" in
    nginx)
        mkdir -p "$WORK/nginx/logs"
        cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $((N + 1024));
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections $((N + 512)); }
http {
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 100000;
    client_header_timeout 600s;
    upstream backend { server $BACKEND; keepalive 128; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
CONF
        "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' &
        PIDS+=($!)
        local master=$!
        for _ in $(seq 50); do
            PROXY_PID=$(pgrep -P "$master" | head -1 || true)
            [ -n "$PROXY_PID" ] && break
            sleep 0.1
        done
        ;;
    isame)
        cat > "$WORK/isame.yaml" <<CONF
server:
  read_timeout: 600s
  idle_timeout: 600s
upstreams:
  - name: bench
    backends: ["http://$BACKEND"]
health:
  enabled: false
CONF
        RUST_LOG=warn "$ISAME" --config "$WORK/isame.yaml" --listen "127.0.0.1:$port" \
            --admin-listen "127.0.0.1:$((port + 1))" --workers 1 --access-log off 2>>"$WORK/isame.log" &
        PIDS+=($!)
        PROXY_PID=$!
        ;;
    esac
    for _ in $(seq 50); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    echo "$kind did not start" >&2
    exit 1
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    sleep 0.5
}

# measure KIND MODE: prints bytes per connection, quiet and serving.
measure() {
    local kind=$1 mode=$2 port=19100
    start_proxy "$kind" $port
    # Warm: allocator arenas, the backend pool, lazily built state.
    for _ in $(seq 20); do curl -sf -o /dev/null "http://127.0.0.1:$port/"; done
    sleep 0.5
    local before after
    before=$(rss_kb "$PROXY_PID")
    ./target/release/isame-idle --target "127.0.0.1:$port" --connections "$N" --mode "$mode" \
        --hold 600 > "$WORK/idle.out" &
    local client=$!
    for _ in $(seq 600); do
        grep -q '^ready' "$WORK/idle.out" 2>/dev/null && break
        if ! kill -0 $client 2>/dev/null; then echo "isame-idle failed" >&2; exit 1; fi
        sleep 0.1
    done
    # isame-lb parks an HTTP/1.1 connection after a second of idleness.
    sleep 3
    local quiet serving
    quiet=$(rss_kb "$PROXY_PID")
    wrk -t1 -c4 -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1
    sleep 1
    serving=$(rss_kb "$PROXY_PID")
    kill $client 2>/dev/null || true
    wait $client 2>/dev/null || true
    stop_proxy
    echo "$(( (quiet - before) * 1024 / N )) $(( (serving - before) * 1024 / N ))"
}

printf '%-8s %12s %12s %12s %12s %8s\n' mode "nginx quiet" "nginx serv." "isame quiet" "isame serv." ratio
for mode in $MODES; do
    if [ "$mode" = http2 ]; then
        nginx_b="- -"
    else
        nginx_b=$(measure nginx "$mode")
    fi
    isame_b=$(measure isame "$mode")
    read -r nq ns <<<"$nginx_b"
    read -r iq is <<<"$isame_b"
    if [ "$ns" = "-" ] || [ "$ns" -le 0 ]; then
        ratio="-"
    else
        ratio=$(awk -v a="$is" -v b="$ns" 'BEGIN { printf "%.1f", a / b }')
    fi
    printf '%-8s %12s %12s %12s %12s %8s\n' "$mode" "$nq" "$ns" "$iq" "$is" "$ratio"
done
echo "(bytes per connection: RSS delta / $N connections, one worker per proxy; ratio: serving, isame-lb / nginx)"
