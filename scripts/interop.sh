#!/usr/bin/env bash
# Interop suite: real Node.js Moleculer nodes (0.15.2 and 0.14.35, from npm) and Rust nodes in
# mixed clusters over TCP on 127.0.0.1, with JSON and MsgPack. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "Node.js is missing: installing it from Debian's packages"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; else
    echo "error: the interop suite needs node and npm (apt-get install nodejs npm)" >&2; exit 1; fi
fi

(cd interop && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --quiet --example node
RUST_NODE_BIN="$(pwd)/target/debug/examples/node" node interop/run.js
