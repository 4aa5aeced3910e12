#!/usr/bin/env bash
# HTTP/2 benchmark: nginx against isame-lb, one worker each, clients
# speaking HTTP/2 (h2c) driven by h2load on loopback for a bounded time.
#
# Scenarios (--scenario):
#   grpc  unary gRPC calls to the same gRPC backend (`isame-echo --grpc`,
#         tonic): nginx with grpc_pass, isame-lb with an h2c:// backend
#         (default)
#   h2    GET requests to the same HTTP/1.1 backend (`isame-echo --fast`):
#         HTTP/2 clients, pooled HTTP/1.1 to the backend on both
#   backend  isame-lb against itself, the same GETs to the same backend
#         (which speaks both): HTTP/1.1 (pooled) against h2c (multiplexed)
#         to the backend
#
# Prints requests/s, mean latency, each proxy's CPU time per request (from
# /proc), the TCP connections each proxy held to the backend in the middle
# of a run, and the isame/nginx ratios (medians of per-round ratios; the
# machine's speed drifts, so each round measures nginx then isame back to
# back).
#
#   bench/h2.sh [--scenario grpc|h2|backend] [-d SECONDS] [-c CLIENTS] [-m STREAMS_PER_CLIENT] [-r ROUNDS] [--no-pin]
#
# ISAME_LB=path/to/isame-lb measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=grpc
DURATION=4
CLIENTS=10
STREAMS=10
ROUNDS=7
PIN=1
while [ $# -gt 0 ]; do
    case "$1" in
        --scenario) SCENARIO="$2"; shift 2 ;;
        -d) DURATION="$2"; shift 2 ;;
        -c) CLIENTS="$2"; shift 2 ;;
        -m) STREAMS="$2"; shift 2 ;;
        -r) ROUNDS="$2"; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        *) echo "usage: $0 [--scenario grpc|h2|backend] [-d SECONDS] [-c CLIENTS] [-m STREAMS] [-r ROUNDS] [--no-pin]" >&2; exit 2 ;;
    esac
done
case "$SCENARIO" in grpc|h2|backend) ;; *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;; esac

. bench/lib.sh
need_debian nginx:nginx h2load:nghttp2-client ss:iproute2 curl:curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ISAME=${ISAME_LB:-./target/release/isame-lb}

cargo build --release --bin isame-lb --bin isame-echo >&2

pin_cpus "$PIN"

WORK=$(mktemp -d /tmp/isame-grpc-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

BACKEND_PORT=18090
if [ "$SCENARIO" = grpc ]; then
    $LOAD_CPU ./target/release/isame-echo --grpc --threads 1 --listen "127.0.0.1:$BACKEND_PORT" 2>/dev/null &
    NGINX_PASS="grpc_pass grpc://backend;
            grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            grpc_set_header X-Forwarded-Proto \$scheme;"
    ISAME_BACKEND="h2c://127.0.0.1:$BACKEND_PORT"
    ISAME_HEALTH="protocol: grpc"
else
    $LOAD_CPU ./target/release/isame-echo --fast --threads 1 --listen "127.0.0.1:$BACKEND_PORT" 2>/dev/null &
    NGINX_PASS="proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;"
    ISAME_BACKEND="http://127.0.0.1:$BACKEND_PORT"
    ISAME_HEALTH="enabled: false"
fi
PIDS+=($!)

start_nginx() {
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # nginx closes a connection after 1,000 requests by default (client and
    # upstream side); h2load does not reconnect, and isame-lb has no such
    # limit.
    keepalive_requests 1000000000;
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; keepalive_requests 1000000000; }
    server {
        listen 127.0.0.1:18091 http2;
        location / {
            $NGINX_PASS
        }
    }
}
CONF
$PROXY_CPU "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!
}

# start_isame NAME PORT ADMIN_PORT BACKEND_URL
start_isame() {
    cat > "$WORK/$1.yaml" <<CONF
upstreams:
  - name: bench
    backends: ["$4"]
health:
  $ISAME_HEALTH
metrics:
  enabled: true
CONF
    RUST_LOG=warn $PROXY_CPU "$ISAME" --config "$WORK/$1.yaml" \
        --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" --workers 1 \
        2>>"$WORK/$1.log" &
    PIDS+=($!)
    LAST_PID=$!
}

if [ "$SCENARIO" = backend ]; then
    start_isame h1 18094 18095 "http://127.0.0.1:$BACKEND_PORT"
    A_NAME="isame h1"; A_PORT=18094; A_PID=$LAST_PID
    B_BACKEND="h2c://127.0.0.1:$BACKEND_PORT"; B_NAME="isame h2c"
else
    start_nginx
    A_NAME=nginx; A_PORT=18091; A_PID=$NGINX_PID
    B_BACKEND=$ISAME_BACKEND; B_NAME=isame-lb
fi
start_isame b 18092 18093 "$B_BACKEND"
B_PORT=18092; B_PID=$LAST_PID

if [ "$SCENARIO" = grpc ]; then
    # One unary call: Echo/Unary with a 5-byte payload, as a gRPC frame.
    printf '\x00\x00\x00\x00\x07\x0a\x05hello' > "$WORK/call.bin"
    H2LOAD_ARGS=(-d "$WORK/call.bin" -H "content-type: application/grpc" -H "te: trailers")
    PATH_URL=/isame.test.v1.Echo/Unary
else
    H2LOAD_ARGS=()
    PATH_URL=/
fi

for port in "$A_PORT" "$B_PORT"; do
    for _ in $(seq 50); do
        h2load -n1 -c1 "${H2LOAD_ARGS[@]}" "http://127.0.0.1:$port$PATH_URL" 2>/dev/null \
            | grep -q "1 succeeded" && break
        sleep 0.1
    done
done


# run NAME PORT PID: one measured h2load run; prints
# "requests_per_s mean_latency_us cpu_us_per_request backend_connections"
run() {
    local name=$1 url="http://127.0.0.1:$2$PATH_URL" pid=$3 before after out calls rps mean conns
    $LOAD_CPU h2load -D 1 -c"$CLIENTS" -m"$STREAMS" "${H2LOAD_ARGS[@]}" "$url" >/dev/null
    before=$(cpu_ticks "$pid")
    $LOAD_CPU h2load -D "$DURATION" -c"$CLIENTS" -m"$STREAMS" "${H2LOAD_ARGS[@]}" "$url" > "$WORK/out" 2>&1 &
    local load=$!
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
    # This proxy's connections only (the other's idle pool stays open).
    local owners
    owners=$(for p in "$pid" $(pgrep -P "$pid" || true); do printf 'pid=%s,|' "$p"; done)
    conns=$(ss -Htnp state established "( dport = :$BACKEND_PORT )" | grep -cE "${owners%|}" || true)
    wait "$load"
    after=$(cpu_ticks "$pid")
    out=$(cat "$WORK/out")
    # -D stops mid-flight: the requests still open then count as failed.
    # More than one per stream is an error; every answer must be 2xx.
    local failed non2xx
    failed=$(echo "$out" | awk '/^requests:/ {print $10}')
    non2xx=$(echo "$out" | awk '/^status codes:/ {print $5 + $7 + $9}')
    if [ -z "$failed" ] || [ "$failed" -gt $((CLIENTS * STREAMS)) ] || [ "${non2xx:-1}" -ne 0 ]; then
        echo "$out" >&2
        echo "errors during the $name run" >&2
        exit 1
    fi
    rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    calls=$(echo "$out" | awk '/^requests:/ {print $8}')
    mean=$(echo "$out" | awk '/^time for request:/ {print $6}')
    awk -v rps="$rps" -v mean="$mean" -v ticks=$((after - before)) -v tick="$TICK" -v calls="$calls" -v conns="$conns" '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
        BEGIN { printf "%.0f %.1f %.2f %d\n", rps, us(mean), ticks / tick * 1e6 / calls, conns }'
}

echo "$SCENARIO: h2load -c$CLIENTS -m$STREAMS -D${DURATION}s, $ROUNDS rounds, pinning: $([ -n "$PROXY_CPU" ] && echo "proxies on CPU 1, h2load+backend on CPU 0" || echo off)" >&2
: > "$WORK/a.res"; : > "$WORK/b.res"
for r in $(seq "$ROUNDS"); do
    run "$A_NAME" "$A_PORT" "$A_PID" >> "$WORK/a.res"
    run "$B_NAME" "$B_PORT" "$B_PID" >> "$WORK/b.res"
    echo "round $r: $A_NAME $(tail -1 "$WORK/a.res")  $B_NAME $(tail -1 "$WORK/b.res")  (req/s mean-µs cpuµs/req backend-conns)" >&2
done

METRICS=$(curl -sf "http://127.0.0.1:18093/metrics")
echo "$METRICS" | grep -q '^isame_lb_requests_total' || { echo "isame metrics missing" >&2; exit 1; }
if [ "$SCENARIO" = grpc ]; then
    echo "$METRICS" | grep -q 'isame_lb_grpc_responses_total{grpc_status="0",upstream="bench"}' \
        || { echo "isame counted no OK gRPC answers" >&2; exit 1; }
fi

paste -d' ' "$WORK/a.res" "$WORK/b.res" | awk -v scenario="$SCENARIO" -v a="$A_NAME" -v b="$B_NAME" '
'"$AWK_MEDIAN"'
    { n++; for (k = 1; k <= 8; k++) col[k, n] = $k
      r_rps[n] = $5 / $1; r_cpu[n] = $7 / $3; r_lat[n] = $6 / $2 }
    END {
        for (k = 1; k <= 8; k++) { for (i = 1; i <= n; i++) v[i] = col[k, i]; m[k] = median(v, n) }
        printf "\n%-10s %10s %10s %14s %16s   (%s, median of %d rounds)\n", "proxy", "req/s", "mean µs", "CPU µs/req", "backend conns", scenario, n
        printf "%-10s %10.0f %10.1f %14.2f %16d\n", a, m[1], m[2], m[3], m[4]
        printf "%-10s %10.0f %10.1f %14.2f %16d\n", b, m[5], m[6], m[7], m[8]
        printf "ratio %s / %s (median of per-round ratios): requests/s %.2fx, CPU per request %.2fx, mean latency %.2fx\n", b, a, median(r_rps, n), median(r_cpu, n), median(r_lat, n)
    }'
