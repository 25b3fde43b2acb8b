#!/usr/bin/env bash
# Remote calls over TCP between two processes, Rust and Moleculer JS in the same run, at 1 and
# 100 requests in flight, with the ratios. Set BENCH_THREADS=1 for single-threaded Rust
# runtimes (one per process, like Node.js).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p moleculer-transporter-tcp --bench tcp 2>/dev/null | tee /tmp/bench-tcp-rust.txt
(cd benchmarks/moleculer-js && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node tcp.js) | tee /tmp/bench-tcp-js.txt
echo
echo "== ratios (Rust / Moleculer JS)"
for n in 1 100; do
  r=$(awk -v n="$n" '$1=="rust" && $2==n {print $5}' /tmp/bench-tcp-rust.txt)
  j=$(awk -v n="$n" '$1=="js" && $2==n {print $5}' /tmp/bench-tcp-js.txt)
  rp99=$(awk -v n="$n" '$1=="rust" && $2==n {print $11}' /tmp/bench-tcp-rust.txt)
  jp99=$(awk -v n="$n" '$1=="js" && $2==n {print $11}' /tmp/bench-tcp-js.txt)
  awk -v n="$n" -v r="$r" -v j="$j" -v rp="$rp99" -v jp="$jp99" 'BEGIN { printf "%3d in flight: %8.0f vs %8.0f calls/s = %4.1fx   p99 %.3f ms vs %.3f ms\n", n, r, j, r / j, rp, jp }'
done
