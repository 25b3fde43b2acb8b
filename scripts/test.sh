#!/usr/bin/env bash
# The project's one test command (the README's and CI's): format check, lints, every test and
# doc test of the workspace, the examples, the interop suite against real Node.js Moleculer
# nodes (which installs its npm packages itself), and the container image built and run as a
# three-container cluster (which installs docker.io and debootstrap itself). Everything runs on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "test servers"
# Live tests start their own redis-server on loopback ports; make sure it is installed.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is missing: installing it from Debian's packages"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    echo "error: the Redis tests need redis-server (apt-get install redis-server)" >&2
    exit 1
  fi
fi
redis-server --version
# The etcd3 discoverer's tests need etcd, and its client library needs protoc to build.
if ! command -v etcd >/dev/null 2>&1 || ! command -v protoc >/dev/null 2>&1; then
  echo "etcd or protoc is missing: installing them from Debian's packages"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
  else
    echo "error: the etcd3 tests need etcd and protoc (apt-get install etcd-server protobuf-compiler)" >&2
    exit 1
  fi
fi
etcd --version | head -1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (unit, integration and doc tests)"
cargo test --workspace --quiet 2>&1 | tee .test-output.log
passed=$(grep -Eo '[0-9]+ passed' .test-output.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' .test-output.log | awk '{s+=$1} END {print s+0}')
rm -f .test-output.log

step "the demo node with the etcd3 feature builds"
cargo build --quiet --example node --features etcd3

step "example: two services on one broker"
cargo run --quiet --example two_services >/dev/null

step "example: the multi-process cluster (the README's main job)"
cargo run --quiet --example cluster

step "interop with Node.js Moleculer (scripts/interop.sh)"
bash scripts/interop.sh | tee .interop-output.log
ipassed=$(grep -Eo '^[0-9]+ passed' .interop-output.log | awk '{print $1}')
ifailed=$(grep -Eo '[0-9]+ failed$' .interop-output.log | awk '{print $1}')
rm -f .interop-output.log
passed=$((passed + ${ipassed:-0}))
failed=$((failed + ${ifailed:-0}))

step "container image: build, and a three-container cluster (scripts/container-test.sh)"
bash scripts/container-test.sh | tee .container-output.log
cpassed=$(grep -Eo '^[0-9]+ passed' .container-output.log | awk '{print $1}')
cfailed=$(grep -Eo '[0-9]+ failed$' .container-output.log | awk '{print $1}')
rm -f .container-output.log
passed=$((passed + ${cpassed:-0}))
failed=$((failed + ${cfailed:-0}))

printf '\n%s passed, %s failed\n' "$passed" "$failed"
