#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints (a warning fails the
# run), every test of the workspace (the control plane's on SQLite), then
# the control plane's tests again on PostgreSQL (a throwaway server the
# tests start; Debian's package is installed when missing). `.ci/run` runs
# exactly this.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
ISAME_TEST_DATABASE=postgres cargo test --locked -p isame-control-plane
