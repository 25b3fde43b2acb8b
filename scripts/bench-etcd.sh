#!/usr/bin/env bash
# etcd3 discovery timings, Rust and Moleculer JS side by side in the same run: time from a node's
# start to being listed by an observer, and from SIGKILL to removal. Needs redis-server, etcd and
# protoc (./scripts/test.sh installs them). Usage: scripts/bench-etcd.sh [trials]
set -euo pipefail
cd "$(dirname "$0")/.."
(cd interop && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 || npm install --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --quiet --release --example node --features etcd3
RUST_NODE_BIN="$(pwd)/target/release/examples/node" node interop/discovery-times.js "${1:-3}"
