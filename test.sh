#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints (a warning fails the
# run), then every test of the workspace. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
