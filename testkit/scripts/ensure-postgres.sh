#!/usr/bin/env bash
# Installs Debian's `postgresql` package (the server the control plane's
# PostgreSQL tests start in a temporary directory) when no server is
# installed: as root, or with `sudo -n`; serialised with a lock so that
# test processes starting at once do not race dpkg. The package's own
# cluster service is not needed: the tests run `initdb` and `postgres`
# themselves on a free loopback port.
#
# Exit 0 when /usr/lib/postgresql/*/bin/postgres exists afterwards.
set -euo pipefail
say() { echo "ensure-postgres: $*" >&2; }
have() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }

lock="${TMPDIR:-/tmp}/isame-postgres-install.lock"
: 2>/dev/null >>"$lock" || true
(
    flock -w 900 9 || { say "timed out waiting for $lock"; exit 1; }
    have && exit 0
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            say "PostgreSQL is missing; install it (apt-get install postgresql) or run as root"
            exit 1
        }
        sudo=(sudo -n)
    fi
    command -v apt-get >/dev/null 2>&1 || {
        say "PostgreSQL is missing and there is no apt-get to install it"
        exit 1
    }
    say "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    # A first try without `apt-get update` keeps reruns offline; a machine
    # with no or stale package lists gets them refreshed once.
    apt=("${sudo[@]}" apt-get -y -q -o DPkg::Lock::Timeout=600)
    "${apt[@]}" install --no-install-recommends postgresql >&2 \
        || { "${apt[@]}" update >&2 && "${apt[@]}" install --no-install-recommends postgresql >&2; }
) 9<"$lock"
have || { say "PostgreSQL could not be installed"; exit 1; }
