#!/usr/bin/env bash
# The container image, built and run as a cluster: builds the Dockerfile, then runs three
# containers of the demo node on the host network (Redis transporter on 127.0.0.1) and checks
# that each becomes healthy, runs as a non-root user, serves calls from the `moleculer`
# command on the host, and stops gracefully (exit code 0) on `docker stop`.
#
# No image can be pulled here, so both base images are made from Debian's packages:
# `debootstrap --variant=minbase bookworm` imported as the runtime image, and the same with
# gcc plus this machine's Rust toolchain as a Rust image, and that with its crate cache (one
# image per Cargo.lock) as the build image. Needs root;
# installs docker.io and debootstrap, and starts dockerd (--bridge=none --iptables=false) when
# none runs. Prints "N passed, M failed" last.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=moleculer-base:bookworm
RUST_IMAGE=moleculer-rust:bookworm
# The build image carries the crates of this Cargo.lock: a new lock gets a new image.
BUILDER_IMAGE=moleculer-builder:$(sha256sum Cargo.lock | cut -c1-12)
IMAGE=moleculer-node:test
WORK=${CONTAINER_TEST_DIR:-/var/tmp/moleculer-container-test}
CLI="$(pwd)/target/debug/moleculer"
passed=0
failed=0
check() {
  local what=$1
  shift
  if "$@"; then
    echo "ok - $what"
    passed=$((passed + 1))
  else
    echo "not ok - $what"
    failed=$((failed + 1))
  fi
}

# --- the tools --------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: the container test needs docker.io and debootstrap (apt-get install docker.io debootstrap)" >&2
    exit 1
  fi
  echo "docker.io or debootstrap is missing: installing them from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
mkdir -p "$WORK"
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (no bridge, no iptables: containers use the host network)"
  dockerd --bridge=none --iptables=false >"$WORK/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start (see $WORK/dockerd.log)" >&2; tail -20 "$WORK/dockerd.log" >&2; exit 1; }
fi

# --- base images from Debian's packages -------------------------------------------------------
# Docs, manuals, locales and apt's downloads are left out, as Debian's slim images do.
import_rootfs() {
  local dir=$1 image=$2
  shift 2
  tar -C "$dir" --exclude=./var/cache/apt/archives --exclude=./var/lib/apt/lists \
    --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
    --exclude=./usr/share/info -c . | docker import "$@" - "$image" >/dev/null
}
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "making $BASE_IMAGE with debootstrap"
  rm -rf "$WORK/base"
  debootstrap --variant=minbase bookworm "$WORK/base" >"$WORK/debootstrap-base.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap-base.log" >&2; exit 1; }
  import_rootfs "$WORK/base" "$BASE_IMAGE"
fi
if ! docker image inspect "$RUST_IMAGE" >/dev/null 2>&1; then
  echo "making $RUST_IMAGE with debootstrap, gcc and this machine's Rust toolchain"
  rm -rf "$WORK/builder"
  debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$WORK/builder" \
    >"$WORK/debootstrap-builder.log" 2>&1 || { tail -20 "$WORK/debootstrap-builder.log" >&2; exit 1; }
  sysroot=$(rustc --print sysroot)
  mkdir -p "$WORK/builder/usr/local/rust"
  cp -a "$sysroot/bin" "$sysroot/lib" "$WORK/builder/usr/local/rust/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$WORK/builder/usr/local/rust/"
  import_rootfs "$WORK/builder" "$RUST_IMAGE" \
    -c 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV CARGO_HOME=/usr/local/cargo'
fi
if ! docker image inspect "$BUILDER_IMAGE" >/dev/null 2>&1; then
  # The crates this workspace uses, as this machine's cargo downloaded them (the tests before
  # this step built everything): the build needs no network.
  echo "making $BUILDER_IMAGE: $RUST_IMAGE with this machine's crates"
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  rm -rf "$WORK/crates" && mkdir -p "$WORK/crates/registry"
  cp -a "$cargo_home/registry/index" "$cargo_home/registry/cache" "$WORK/crates/registry/"
  printf 'FROM %s\nCOPY registry /usr/local/cargo/registry\nENV CARGO_NET_OFFLINE=true\n' "$RUST_IMAGE" \
    | DOCKER_BUILDKIT=0 docker build --quiet -t "$BUILDER_IMAGE" -f - "$WORK/crates" >/dev/null
fi

# --- the image --------------------------------------------------------------------------------
echo "building $IMAGE"
started=$(date +%s)
DOCKER_BUILDKIT=0 docker build --quiet --network host \
  --build-arg "BUILDER_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
  -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "built in $(($(date +%s) - started)) s; image size $((size / 1000000)) MB (base $(($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") / 1000000)) MB)"
check "the image runs as a non-root user" test "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" = "10001:10001"
check "the image has a healthcheck" test -n "$(docker image inspect -f '{{.Config.Healthcheck}}' "$IMAGE")"

# --- a three-container cluster ----------------------------------------------------------------
cargo build --quiet -p moleculer-cli
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
redis_pid=$!
names=(mol-ct-1 mol-ct-2 mol-ct-3)
cleanup() {
  docker rm -f "${names[@]}" >/dev/null 2>&1 || true
  kill "$redis_pid" 2>/dev/null || true
}
trap cleanup EXIT
docker rm -f "${names[@]}" >/dev/null 2>&1 || true
transporter="redis://127.0.0.1:$redis_port"
for name in "${names[@]}"; do
  docker run -d --network host --name "$name" \
    -e "MOL_NODE_ID=${name#mol-}" -e "MOL_TRANSPORTER=$transporter" -e MOL_NAMESPACE=containers \
    --health-interval 1s --health-start-period 1s "$IMAGE" >/dev/null
done

healthy() {
  local deadline=$(($(date +%s) + 30))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local all=1
    for name in "${names[@]}"; do
      [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] || all=0
    done
    [ "$all" = 1 ] && return 0
    sleep 0.5
  done
  for name in "${names[@]}"; do docker inspect -f "$name {{.State.Health.Status}} {{json .State.Health.Log}}" "$name"; docker logs --tail 20 "$name"; done
  return 1
}
check "three containers become healthy" healthy

runs_as_10001() {
  for name in "${names[@]}"; do
    [ "$(ps -o uid= -p "$(docker inspect -f '{{.State.Pid}}' "$name")" | tr -d ' ')" = 10001 ] || return 1
  done
}
check "every node process runs as uid 10001" runs_as_10001

cli() { "$CLI" -t "$transporter" -n containers "$@"; }
three_nodes() {
  cli --json nodes | python3 -c '
import json, sys
nodes = {n["id"]: n["available"] for n in json.load(sys.stdin)}
wanted = ["ct-1", "ct-2", "ct-3"]
sys.exit(0 if all(nodes.get(n) for n in wanted) else print("nodes:", nodes) or 1)'
}
check "the moleculer command on the host sees the three nodes" three_nodes

balanced() {
  # One REPL session, nine calls: round robin reaches every container.
  printf 'call whoami.node\n%.0s' $(seq 1 9) | cli --json repl 2>&1 | python3 -c '
import sys
text = sys.stdin.read()
seen = {n for n in ("ct-1", "ct-2", "ct-3") if n in text}
sys.exit(0 if len(seen) == 3 else print("served by:", seen, "output:", text) or 1)'
}
check "calls are served by every container" balanced

check "a call's result comes back" test "$(cli --json call math.add '{"a": 40, "b": 2}')" = 42

graceful_stop() {
  docker stop -t 20 mol-ct-3 >/dev/null
  [ "$(docker inspect -f '{{.State.ExitCode}}' mol-ct-3)" = 0 ] || { docker logs --tail 20 mol-ct-3; return 1; }
  local deadline=$(($(date +%s) + 10))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    docker logs mol-ct-1 2>&1 | grep -q 'node disconnected node="ct-3" unexpected=false' && return 0
    sleep 0.2
  done
  docker logs --tail 20 mol-ct-1
  return 1
}
check "docker stop: the node leaves gracefully, exit code 0, peers see a goodbye" graceful_stop

printf '%s passed, %s failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
