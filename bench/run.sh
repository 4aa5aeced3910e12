#!/usr/bin/env bash
# Proxy benchmark: two proxies side by side, one worker each, in front of
# the same backend, driven by wrk on loopback for a bounded time.
#
# Scenarios (--scenario):
#   http      nginx against isame-lb, plain HTTP (default)
#   https     nginx against isame-lb, both terminating TLS (same ECDSA
#             certificate, keep-alive connections)
#   features  isame-lb with health checks, breakers, retries and a rate limit
#             against isame-lb with all of them off: the cost of the features
#   logs      nginx against isame-lb, plain HTTP, both writing an access-log
#             line per request to a file (nginx's default combined format;
#             isame-lb's text format)
#
# Prints requests/s, latency p50/p99, each proxy's CPU time per request (from
# /proc) and the B/A ratios. The machine's speed drifts by ±15% over seconds
# (shared virtual CPUs), so a run is many short rounds, each measuring A then
# B back to back; each round gives a ratio, and the report is the median of
# the rounds' figures and of their ratios.
#
#   bench/run.sh [--scenario S] [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS] [--no-pin]
#
# ISAME_LB=path/to/isame-lb measures another build (e.g. an older commit's).
#
# Pinning (default): the proxies run on CPU 1, wrk and the backend share
# CPU 0, so the proxy's CPU is what limits throughput.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=http
DURATION=4
CONNS=50
ROUNDS=9
PIN=1
while [ $# -gt 0 ]; do
    case "$1" in
        --scenario) SCENARIO="$2"; shift 2 ;;
        -d) DURATION="$2"; shift 2 ;;
        -c) CONNS="$2"; shift 2 ;;
        -r) ROUNDS="$2"; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        *) echo "usage: $0 [--scenario http|https|features|logs] [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS] [--no-pin]" >&2; exit 2 ;;
    esac
done
case "$SCENARIO" in http|https|features|logs) ;; *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;; esac
# Access logs: off for both proxies except in the logs scenario.
NGINX_ACCESS_LOG="access_log off;"
ISAME_LOG_LEVEL=warn

. bench/lib.sh
need_debian nginx:nginx wrk:wrk curl:curl
[ "$SCENARIO" != https ] || need_debian openssl:openssl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ISAME=${ISAME_LB:-./target/release/isame-lb}

cargo build --release --bin isame-lb --bin isame-echo >&2

pin_cpus "$PIN"

WORK=$(mktemp -d /tmp/isame-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

BACKEND=127.0.0.1:18080
$LOAD_CPU ./target/release/isame-echo --fast --threads 1 --listen "$BACKEND" 2>/dev/null &
PIDS+=($!)

# start_nginx PORT [ssl]
start_nginx() {
    local listen="127.0.0.1:$1" ssl=""
    if [ "${2:-}" = ssl ]; then
        listen="$listen ssl"
        ssl="ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:1m;"
    fi
    mkdir -p "$WORK/nginx/logs"
    cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    $NGINX_ACCESS_LOG
    upstream backend { server $BACKEND; keepalive 128; }
    server {
        listen $listen;
        $ssl
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
CONF
    $PROXY_CPU "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' &
    PIDS+=($!)
    LAST_PID=$!
}

# start_isame NAME PORT ADMIN_PORT EXTRA_YAML [EXTRA_FLAGS...]
start_isame() {
    local name=$1 port=$2 admin=$3 extra=$4
    shift 4
    cat > "$WORK/$name.yaml" <<CONF
upstreams:
  - name: bench
    backends: ["http://$BACKEND"]
metrics:
  enabled: true
$extra
CONF
    RUST_LOG=$ISAME_LOG_LEVEL $PROXY_CPU "$ISAME" --config "$WORK/$name.yaml" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --workers 1 "$@" \
        2>>"$WORK/$name.log" &
    PIDS+=($!)
    LAST_PID=$!
}

FEATURES_OFF="health:
  enabled: false
circuit_breaker:
  enabled: false
retry:
  enabled: false"

case "$SCENARIO" in
http)
    start_nginx 18081; A_PID=$LAST_PID; A_URL=http://127.0.0.1:18081/; A_NAME=nginx
    start_isame isame 18082 18083 ""; B_PID=$LAST_PID; B_URL=http://127.0.0.1:18082/; B_NAME=isame-lb
    ;;
logs)
    NGINX_ACCESS_LOG="access_log $WORK/nginx/logs/access.log;"
    ISAME_LOG_LEVEL=info
    start_nginx 18081; A_PID=$LAST_PID; A_URL=http://127.0.0.1:18081/; A_NAME=nginx
    start_isame isame 18082 18083 ""; B_PID=$LAST_PID; B_URL=http://127.0.0.1:18082/; B_NAME=isame-lb
    ;;
https)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    start_nginx 18443 ssl; A_PID=$LAST_PID; A_URL=https://127.0.0.1:18443/; A_NAME=nginx
    start_isame isame 18082 18083 "tls:
  enabled: true
  cert_file: $WORK/cert.pem
  key_file: $WORK/key.pem" --https-listen 127.0.0.1:18444
    B_PID=$LAST_PID; B_URL=https://127.0.0.1:18444/; B_NAME=isame-lb
    ;;
features)
    start_isame off 18085 18086 "$FEATURES_OFF"; A_PID=$LAST_PID; A_URL=http://127.0.0.1:18085/; A_NAME="isame off"
    # Every feature on, none of them refusing: backends healthy, a rate
    # limit far above the load.
    start_isame on 18082 18083 "health:
  enabled: true
  interval: 1s
  timeout: 500ms
circuit_breaker:
  enabled: true
retry:
  enabled: true
trusted_proxies: [\"10.0.0.0/8\"]
routes:
  - name: all
    path_prefix: /
    upstream: bench
    rate_limit:
      requests_per_ip: 100000000
      window_size: 1s"
    B_PID=$LAST_PID; B_URL=http://127.0.0.1:18082/; B_NAME="isame on"
    ;;
esac

for url in "http://$BACKEND/" "$A_URL" "$B_URL"; do
    for _ in $(seq 50); do
        curl -ksf -o /dev/null "$url" && break
        sleep 0.1
    done
done


# run NAME URL PID: one measured wrk run; prints "rps p50_us p99_us cpu_us_per_req"
run() {
    local url=$2 pid=$3 before after out rps p50 p99 reqs
    $LOAD_CPU wrk -t1 -c"$CONNS" -d1s "$url" >/dev/null # warm-up
    before=$(cpu_ticks "$pid")
    out=$($LOAD_CPU wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url")
    after=$(cpu_ticks "$pid")
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
        echo "$out" >&2
        echo "errors during the $1 run" >&2
        exit 1
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v ticks=$((after - before)) -v tick="$TICK" -v reqs="$reqs" '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
        BEGIN { printf "%.0f %.1f %.1f %.2f\n", rps, us(p50), us(p99), ticks / tick * 1e6 / reqs }'
}

echo "scenario $SCENARIO: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, pinning: $([ -n "$PROXY_CPU" ] && echo "proxies on CPU 1, wrk+backend on CPU 0" || echo off)" >&2
: > "$WORK/a.res"; : > "$WORK/b.res"
for r in $(seq "$ROUNDS"); do
    run "$A_NAME" "$A_URL" "$A_PID" >> "$WORK/a.res"
    run "$B_NAME" "$B_URL" "$B_PID" >> "$WORK/b.res"
    echo "round $r: $A_NAME $(tail -1 "$WORK/a.res")  $B_NAME $(tail -1 "$WORK/b.res")  (rps p50µs p99µs cpuµs/req)" >&2
done

curl -sf "http://127.0.0.1:18083/metrics" | grep -q '^isame_lb_requests_total' || { echo "isame metrics missing" >&2; exit 1; }

paste -d' ' "$WORK/a.res" "$WORK/b.res" | awk -v a="$A_NAME" -v b="$B_NAME" -v scenario="$SCENARIO" '
'"$AWK_MEDIAN"'
    { n++; for (k = 1; k <= 8; k++) col[k, n] = $k
      r_rps[n] = $5 / $1; r_cpu[n] = $8 / $4; r_p99[n] = $7 / $3 }
    END {
        for (k = 1; k <= 8; k++) { for (i = 1; i <= n; i++) v[i] = col[k, i]; m[k] = median(v, n) }
        printf "\n%-10s %12s %10s %10s %16s   (%s, median of %d rounds)\n", "proxy", "requests/s", "p50 µs", "p99 µs", "CPU µs/request", scenario, n
        printf "%-10s %12.0f %10.1f %10.1f %16.2f\n", a, m[1], m[2], m[3], m[4]
        printf "%-10s %12.0f %10.1f %10.1f %16.2f\n", b, m[5], m[6], m[7], m[8]
        printf "ratio %s / %s (median of per-round ratios): requests/s %.2fx, CPU per request %.2fx, p99 latency %.2fx\n", b, a, median(r_rps, n), median(r_cpu, n), median(r_p99, n)
    }'
