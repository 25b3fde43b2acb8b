#!/usr/bin/env bash
# Remote calls over the Redis transporter, Rust and Moleculer JS against the same redis-server
# (started here on a loopback port), at 1 and 100 requests in flight.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 0.5
BENCH_REDIS_URL="redis://127.0.0.1:$port" cargo bench --quiet -p moleculer-transporter-redis --bench redis 2>/dev/null
(cd benchmarks/moleculer-js && npm install --no-audit --no-fund --loglevel=error >/dev/null && node remote.js JSON "redis://127.0.0.1:$port")
