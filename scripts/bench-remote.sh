#!/usr/bin/env bash
# Remote calls through the in-memory transporter (Rust) and Moleculer's Fake transporter
# (Node.js), and REQUEST encode/decode, in the same run on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== packet codec (cargo bench -p moleculer-core --bench codec)"
cargo bench --quiet -p moleculer-core --bench codec 2>/dev/null

echo
echo "== moleculer-rs, multi-thread runtime (cargo bench -p moleculer-broker --bench remote)"
cargo bench --quiet -p moleculer-broker --bench remote 2>/dev/null
echo
echo "== moleculer-rs, one thread (BENCH_CURRENT_THREAD=1)"
BENCH_CURRENT_THREAD=1 cargo bench --quiet -p moleculer-broker --bench remote 2>/dev/null

echo
echo "== Moleculer (Node.js), Fake transporter"
cd benchmarks/moleculer-js
npm ci --no-audit --no-fund --loglevel=error >/dev/null
node remote.js JSON
node remote.js MsgPack | tail -2
