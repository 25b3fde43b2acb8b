#!/usr/bin/env bash
# The project's one test command (the README's and CI's): format check, lints, every test and
# doc test of the workspace, and a run of the example. Needs only a Rust toolchain today; the
# set-up of test servers (Redis, etcd, Node.js peers) joins here as those backends arrive.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (unit, integration and doc tests)"
cargo test --workspace --quiet 2>&1 | tee .test-output.log
passed=$(grep -Eo '[0-9]+ passed' .test-output.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' .test-output.log | awk '{s+=$1} END {print s+0}')
rm -f .test-output.log

step "example: two services on one broker"
cargo run --quiet --example two_services >/dev/null

step "example: the multi-process cluster (the README's main job)"
cargo run --quiet --example cluster

printf '\n%s passed, %s failed\n' "$passed" "$failed"
