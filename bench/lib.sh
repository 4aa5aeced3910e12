# Helpers shared by the benchmark scripts (sourced, not run).

# need_debian CMD:PACKAGE...: installs from Debian the packages whose
# command is missing (nginx counts when /usr/sbin/nginx exists).
need_debian() {
    local need=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    echo "installing ${need[*]} from Debian..." >&2
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
        $sudo apt-get update >/dev/null && $sudo apt-get install -y "${need[@]}" >/dev/null
    }
}

# pin_cpus PIN: sets PROXY_CPU and LOAD_CPU (proxies on CPU 1, load and
# backends on CPU 0) when PIN is 1 and there are two CPUs; empty otherwise.
pin_cpus() {
    if [ "$1" = 1 ] && [ "$(nproc)" -ge 2 ]; then
        PROXY_CPU="taskset -c 1"; LOAD_CPU="taskset -c 0"
    else
        PROXY_CPU=""; LOAD_CPU=""
    fi
}

TICK=$(getconf CLK_TCK)
# cpu_ticks PID: CPU ticks (user+system) of a process and its children
# (nginx's master and worker, or isame-lb's threads).
cpu_ticks() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}

# The awk function median(x, n) of the values x[1..n], for the reports.
AWK_MEDIAN='
    function median(x, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = x[i]; for (j = i - 1; j > 0 && x[j] > t; j--) x[j+1] = x[j]; x[j+1] = t }
        return (n % 2) ? x[(n+1)/2] : (x[n/2] + x[n/2+1]) / 2
    }'
