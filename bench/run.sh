#!/usr/bin/env bash
# Proxy benchmark: nginx and isame-lb side by side, one worker each, in front
# of the same backend, driven by wrk on loopback for a bounded time.
#
# Prints requests/s, latency p50/p99, the proxy's CPU time per request (from
# /proc) and the isame/nginx ratios. The machine's speed drifts by ±15% over
# seconds (shared virtual CPUs), so a run is many short rounds, each measuring
# nginx then isame back to back; each round gives a ratio, and the report is
# the median of the rounds' figures and of their ratios.
#
#   bench/run.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS] [--no-pin]
#
# ISAME_LB=path/to/isame-lb measures another build (e.g. an older commit's)
# against the same nginx, for before/after comparisons.
#
# Pinning (default): the proxy under test runs alone on CPU 1, wrk and the
# backend share CPU 0, so the proxy's CPU is what limits throughput.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=4
CONNS=50
ROUNDS=9
PIN=1
while [ $# -gt 0 ]; do
    case "$1" in
        -d) DURATION="$2"; shift 2 ;;
        -c) CONNS="$2"; shift 2 ;;
        -r) ROUNDS="$2"; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        *) echo "usage: $0 [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS] [--no-pin]" >&2; exit 2 ;;
    esac
done

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian..." >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need[@]}" >/dev/null
    }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --bin isame-lb --bin isame-echo >&2

CPUS=$(nproc)
if [ "$PIN" = 1 ] && [ "$CPUS" -ge 2 ]; then
    PROXY_CPU="taskset -c 1"; LOAD_CPU="taskset -c 0"
else
    PROXY_CPU=""; LOAD_CPU=""
fi

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
NGINX_ADDR=127.0.0.1:18081
ISAME_ADDR=127.0.0.1:18082
ISAME_ADMIN=127.0.0.1:18083

$LOAD_CPU ./target/release/isame-echo --fast --threads 1 --listen "$BACKEND" 2>/dev/null &
PIDS+=($!)

mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream backend { server $BACKEND; keepalive 128; }
    server {
        listen $NGINX_ADDR;
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
NGINX_PID=$!

cat > "$WORK/isame.yaml" <<CONF
upstreams:
  - name: bench
    backends: ["http://$BACKEND"]
metrics:
  enabled: true
CONF
RUST_LOG=warn $PROXY_CPU "${ISAME_LB:-./target/release/isame-lb}" --config "$WORK/isame.yaml" \
    --listen "$ISAME_ADDR" --admin-listen "$ISAME_ADMIN" --workers 1 &
PIDS+=($!)
ISAME_PID=$!

for addr in "$BACKEND" "$NGINX_ADDR" "$ISAME_ADDR"; do
    for _ in $(seq 50); do
        curl -sf -o /dev/null "http://$addr/" && break
        sleep 0.1
    done
done

TICK=$(getconf CLK_TCK)
# CPU ticks (user+system) of a process and its children processes' threads:
# nginx's master and worker, or isame-lb's threads.
cpu_ticks() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}

# run NAME ADDR PID: one measured wrk run; prints "rps p50_us p99_us cpu_us_per_req"
run() {
    local addr=$2 pid=$3 before after out rps p50 p99 reqs
    $LOAD_CPU wrk -t1 -c"$CONNS" -d1s "http://$addr/" >/dev/null # warm-up
    before=$(cpu_ticks "$pid")
    out=$($LOAD_CPU wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://$addr/")
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

echo "wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, pinning: $([ -n "$PROXY_CPU" ] && echo "proxy on CPU 1, wrk+backend on CPU 0" || echo off)" >&2
: > "$WORK/nginx.res"; : > "$WORK/isame.res"
for r in $(seq "$ROUNDS"); do
    run nginx "$NGINX_ADDR" "$NGINX_PID" >> "$WORK/nginx.res"
    run isame "$ISAME_ADDR" "$ISAME_PID" >> "$WORK/isame.res"
    echo "round $r: nginx $(tail -1 "$WORK/nginx.res")  isame $(tail -1 "$WORK/isame.res")  (rps p50µs p99µs cpuµs/req)" >&2
done

curl -sf "http://$ISAME_ADMIN/metrics" | grep -q '^isame_lb_requests_total' || { echo "isame metrics missing" >&2; exit 1; }

paste -d' ' "$WORK/nginx.res" "$WORK/isame.res" | awk '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
        return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    { n++; for (k = 1; k <= 8; k++) col[k, n] = $k
      r_rps[n] = $5 / $1; r_cpu[n] = $8 / $4; r_p99[n] = $7 / $3 }
    END {
        for (k = 1; k <= 8; k++) { for (i = 1; i <= n; i++) v[i] = col[k, i]; m[k] = median(v, n) }
        printf "\n%-10s %12s %10s %10s %16s   (median of %d rounds)\n", "proxy", "requests/s", "p50 µs", "p99 µs", "CPU µs/request", n
        printf "%-10s %12.0f %10.1f %10.1f %16.2f\n", "nginx", m[1], m[2], m[3], m[4]
        printf "%-10s %12.0f %10.1f %10.1f %16.2f\n", "isame-lb", m[5], m[6], m[7], m[8]
        printf "ratio isame/nginx (median of per-round ratios): requests/s %.2fx, CPU per request %.2fx, p99 latency %.2fx\n", median(r_rps, n), median(r_cpu, n), median(r_p99, n)
    }'
