#!/usr/bin/env bash
# What metrics cost, Rust and Moleculer (Node.js) in the same run on this machine: local and
# remote calls with metrics off and on. Usage: scripts/bench-metrics.sh (needs node and npm)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== moleculer-rs (cargo bench -p moleculer-broker --bench metrics)"
cargo bench --quiet -p moleculer-broker --bench metrics 2>/dev/null

echo
echo "== Moleculer (Node.js), same machine, same method"
(cd benchmarks/moleculer-js && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node metrics.js)
