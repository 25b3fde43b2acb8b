#!/usr/bin/env bash
# Interop suite: real Node.js Moleculer nodes (0.15.2 and 0.14.35, from npm) and Rust nodes in
# mixed clusters on 127.0.0.1: TCP (JSON and MsgPack), the Redis transporter with Local and
# Redis discovery, and the etcd3 discoverer. Installs its npm packages; needs redis-server, etcd
# and protoc (./scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "Node.js is missing: installing it from Debian's packages"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; else
    echo "error: the interop suite needs node and npm (apt-get install nodejs npm)" >&2; exit 1; fi
fi

for tool in redis-server etcd protoc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: the interop suite needs $tool (./scripts/test.sh installs it)" >&2; exit 1; }
done
(cd interop && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 || npm install --no-audit --no-fund --loglevel=error >/dev/null)
# The demo node with every discoverer, etcd3 included.
cargo build --quiet --example node --features etcd3
cargo build --quiet -p moleculer-cli
RUST_NODE_BIN="$(pwd)/target/debug/examples/node" MOLECULER_CLI_BIN="$(pwd)/target/debug/moleculer" node interop/run.js
