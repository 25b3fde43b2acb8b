#!/usr/bin/env bash
# Local call and emit throughput, Rust and Moleculer (Node.js) in the same run on this machine.
# Usage: scripts/bench-local.sh   (needs node and npm for the Moleculer side)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== moleculer-rs (cargo bench -p moleculer-broker --bench local)"
cargo bench --quiet -p moleculer-broker --bench local 2>/dev/null | tee /tmp/bench-rust.txt

echo
echo "== Moleculer (Node.js), same machine, same method"
(cd benchmarks/moleculer-js && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node local.js) | tee /tmp/bench-js.txt

echo
echo "== ratios (Rust / Moleculer, one thread each)"
for case in "local call (untyped, no params)" "local call (typed params {a,b})" "local call, cache hit (keys a, b)" "local emit (one handler)"; do
  rust=$(grep -F "$case" /tmp/bench-rust.txt | grep "1 thread" | awk '{for(i=1;i<=NF;i++) if($i=="M") print $(i-1)}')
  js=$(grep -F "$case" /tmp/bench-js.txt | awk '{for(i=1;i<=NF;i++) if($i=="M") print $(i-1)}')
  awk -v c="$case" -v r="$rust" -v j="$js" 'BEGIN { printf "%-34s %6.2f M/s vs %5.2f M/s  = %4.1fx\n", c, r, j, r / j }'
done
