# The demo node as a container image: built in a Rust image, run in a small Debian image as
# a non-root user, with a healthcheck. Both base images are build arguments, so the image
# builds where none can be pulled (see docs/deployment.md and scripts/container-test.sh):
#
#   docker build -t moleculer-node .
#   docker build --build-arg BUILDER_IMAGE=my-rust --build-arg RUNTIME_IMAGE=my-debian -t moleculer-node .
ARG BUILDER_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --example node \
    && cp target/release/examples/node /moleculer-node

FROM ${RUNTIME_IMAGE}
# A fixed uid/gid, written directly so the runtime image needs no user tools.
RUN echo 'moleculer:x:10001:10001:moleculer:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'moleculer:x:10001:' >> /etc/group \
    && mkdir -p /app && chown 10001:10001 /app
COPY --from=build /moleculer-node /usr/local/bin/moleculer-node
USER 10001:10001
# moleculer.toml, if mounted, is read from here; MOL_* variables override it.
WORKDIR /app
# The node rewrites this file every second; --healthcheck reads it (fresh and connected).
ENV MOLECULER_HEALTH_FILE=/tmp/moleculer-health
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/moleculer-node", "--healthcheck"]
# The runner stops the broker gracefully on SIGTERM (what `docker stop` sends) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/moleculer-node"]
