#!/usr/bin/env bash
# Checks docker-compose.yml against the compose specification, without a
# Docker engine: `docker compose config -q` when the Compose v2 plugin is
# there, otherwise Debian's `docker-compose` (1.29), installed with apt-get
# when missing. Both parse, interpolate and validate the file, and check that
# every build context exists, without talking to a daemon.
#
#   deploy/check-compose.sh [COMPOSE_FILE...]  exit 0 valid, 1 invalid or no tool
#   (several files: checked merged, in order, as `-f A -f B` does)
#
# testkit/tests/compose.rs runs it; the install is idempotent and serialised
# with a lock, so parallel runs are safe.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
files=()
for f in "${@:-$root/docker-compose.yml}"; do
    files+=("$(realpath "$f")")
done
file="${files[0]}"

# Makes sure docker-compose is installed. Every caller takes the lock, even
# when the tool looks present: during another run's apt-get the file may
# already be unpacked while its Python modules are not.
ensure_docker_compose() {
    local lock="${TMPDIR:-/tmp}/isame-docker-compose-install.lock"
    # Opened for reading, so a lock file another user created works too.
    : 2>/dev/null >>"$lock" || true
    (
        flock -w 900 9 || { echo "check-compose: timed out waiting for $lock" >&2; exit 1; }
        command -v docker-compose >/dev/null 2>&1 && exit 0
        sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || {
                echo "check-compose: docker-compose is missing; install it (apt-get install docker-compose) or run as root" >&2
                exit 1
            }
            sudo=(sudo -n)
        fi
        command -v apt-get >/dev/null 2>&1 || {
            echo "check-compose: docker-compose is missing and there is no apt-get to install it" >&2
            exit 1
        }
        echo "check-compose: installing Debian's docker-compose package" >&2
        export DEBIAN_FRONTEND=noninteractive
        # --no-install-recommends: only the tool, not the docker.io engine.
        # A first try without `apt-get update` keeps reruns offline; a machine
        # with no or stale package lists gets them refreshed once.
        apt=("${sudo[@]}" apt-get -y -q -o DPkg::Lock::Timeout=600)
        "${apt[@]}" install --no-install-recommends docker-compose >&2 \
            || { "${apt[@]}" update >&2 && "${apt[@]}" install --no-install-recommends docker-compose >&2; }
    ) 9<"$lock"
}

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    ensure_docker_compose || exit 1
    command -v docker-compose >/dev/null 2>&1 || {
        echo "check-compose: docker-compose could not be installed" >&2
        exit 1
    }
    compose=(docker-compose)
fi

# Interpolation must succeed with nothing set: every variable has a default.
unset ISAME_ADMIN_TOKEN GRAFANA_ADMIN_PASSWORD POSTGRES_PASSWORD
cd "$(dirname "$file")"
args=()
for f in "${files[@]}"; do
    args+=(-f "$f")
done
echo "check-compose: ${compose[*]} ${args[*]} config -q" >&2
"${compose[@]}" "${args[@]}" config -q
echo "check-compose: ${files[*]} valid" >&2
