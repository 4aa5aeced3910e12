#!/usr/bin/env bash
# Runs the dashboard's browser test (e2e.mjs) in headless Chromium against a
# running control plane. Installs what it needs on first use:
#   - Debian's `chromium` package with apt-get (as root, or with `sudo -n`),
#     serialised with a lock so that parallel runs do not race dpkg;
#   - playwright-core from npm, pinned, into target/tools/playwright (the
#     package drives a browser over the DevTools protocol; it downloads no
#     browser of its own).
#
#   control-plane/tests/dashboard/run.sh        (settings in the environment:
#       ISAME_URL, ISAME_ADMIN_TOKEN, ISAME_VIEWER_TOKEN, ISAME_NODES,
#       ISAME_SCREENSHOTS_DIR (optional); see e2e.mjs)
#
# Exit 0 when every step passed; 1 when a step failed or a tool could not
# be set up (never a silent skip).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
tools="${ISAME_TOOLS_DIR:-$root/target/tools}"
playwright="$tools/playwright"
playwright_version=1.65.1
chromium="${ISAME_CHROMIUM:-/usr/bin/chromium}"

say() { echo "dashboard-e2e: $*" >&2; }

# Every caller takes the lock, even when the browser looks present: during
# another run's apt-get the file may be unpacked while its libraries are not.
ensure_chromium() {
    local lock="${TMPDIR:-/tmp}/isame-chromium-install.lock"
    : 2>/dev/null >>"$lock" || true
    (
        flock -w 900 9 || { say "timed out waiting for $lock"; exit 1; }
        [ -x "$chromium" ] && exit 0
        if [ "$chromium" != /usr/bin/chromium ]; then
            say "$chromium (ISAME_CHROMIUM) does not exist"
            exit 1
        fi
        sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || {
                say "chromium is missing; install it (apt-get install chromium) or run as root"
                exit 1
            }
            sudo=(sudo -n)
        fi
        command -v apt-get >/dev/null 2>&1 || {
            say "chromium is missing and there is no apt-get to install it"
            exit 1
        }
        say "installing Debian's chromium package"
        export DEBIAN_FRONTEND=noninteractive
        # A first try without `apt-get update` keeps reruns offline; a machine
        # with no or stale package lists gets them refreshed once.
        apt=("${sudo[@]}" apt-get -y -q -o DPkg::Lock::Timeout=600)
        "${apt[@]}" install --no-install-recommends chromium >&2 \
            || { "${apt[@]}" update >&2 && "${apt[@]}" install --no-install-recommends chromium >&2; }
    ) 9<"$lock"
    [ -x "$chromium" ] || { say "chromium could not be installed"; return 1; }
}

ensure_playwright() {
    command -v node >/dev/null 2>&1 || { say "node is missing (Node.js 18 or newer is needed)"; return 1; }
    command -v npm >/dev/null 2>&1 || { say "npm is missing"; return 1; }
    mkdir -p "$playwright"
    : >>"$playwright/.lock"
    (
        flock -w 600 9 || { say "timed out waiting for $playwright/.lock"; exit 1; }
        installed="$(cat "$playwright/.version" 2>/dev/null || true)"
        if [ "$installed" = "$playwright_version" ] \
            && [ -f "$playwright/node_modules/playwright-core/package.json" ]; then
            exit 0
        fi
        say "installing playwright-core@$playwright_version from npm into $playwright"
        # A package.json of its own, so that npm installs here and not into
        # a parent folder.
        printf '{"private": true}\n' >"$playwright/package.json"
        # playwright-core has no install script and downloads no browser.
        (cd "$playwright" && npm install --no-save --no-audit --no-fund --ignore-scripts \
            --loglevel=error "playwright-core@$playwright_version" >&2)
        echo "$playwright_version" >"$playwright/.version"
    ) 9<"$playwright/.lock"
}

ensure_chromium
ensure_playwright
say "$("$chromium" --version 2>/dev/null | head -n1), playwright-core $playwright_version"
export ISAME_PLAYWRIGHT_DIR="$playwright"
export ISAME_CHROMIUM="$chromium"
exec node "$here/e2e.mjs"
