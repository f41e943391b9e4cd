# syntax=docker/dockerfile:1
#
# tidemark container image.
#
#   docker build -t tidemark .
#   docker run -d --name tidemark -p 127.0.0.1:8080:8080 -v tidemark-data:/data tidemark
#
# Every step below also runs outside Docker: scripts/image-steps.sh performs them on
# the host into a temporary root and starts the result as the same non-root user with
# the same environment. tests/dockerfile.rs fails on careless edits to this file.
#
# Layer order is for the cache: the toolchain and cargo-chef (rarely change), then the
# dependency graph compiled from the manifests alone (changes with Cargo.toml or
# Cargo.lock), then the crate itself (changes with every commit). cargo-chef rather
# than a hand-made stub crate, because a stub breaks as soon as Cargo.toml declares a
# [[bench]] or [[test]] whose file the stub does not have.

FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe: every manifest and the lock file, with all sources stubbed out.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until the recipe changes.
RUN cargo chef cook --release --locked --bin tidemark --recipe-path recipe.json
COPY . .
# The version check proves this is the real binary, not cargo-chef's empty stub.
RUN cargo build --release --locked --bin tidemark \
 && install -D -m 0755 target/release/tidemark /out/tidemark \
 && /out/tidemark --version | grep -q '^tidemark '

# The runtime: Debian slim (the glibc the build stage linked against) and the binary.
# No curl, no shell tools beyond the base image: the health check is the binary itself.
FROM debian:bookworm-slim AS runtime
# A fixed, unprivileged UID/GID, so a bind-mounted host directory can be prepared
# with `chown 10001:10001` ahead of time. /data is created and owned here, before
# VOLUME, so a fresh named volume is initialised with this owner.
RUN groupadd --system --gid 10001 tidemark \
 && useradd --system --uid 10001 --gid 10001 \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin tidemark \
 && mkdir -p /data \
 && chown 10001:10001 /data \
 && chmod 0750 /data
COPY --from=build /out/tidemark /usr/local/bin/tidemark

# Listen on all interfaces inside the container; publish ports deliberately.
# The Tyrant protocol has no authentication, so its port only admits loopback and
# private ranges by default; set TIDEMARK_TYRANT_ALLOW to narrow it further.
# Set TIDEMARK_AUTH_TOKEN_FILE (e.g. a Docker secret) to require a bearer token on
# the HTTP API, and TIDEMARK_METRICS_ADDR to serve /metrics on a separate port.
ENV TIDEMARK_HTTP_ADDR=0.0.0.0:8080 \
    TIDEMARK_TYRANT_ADDR=0.0.0.0:1978 \
    TIDEMARK_DATA_DIR=/data \
    TIDEMARK_LOG_FORMAT=json \
    TIDEMARK_TYRANT_ALLOW=127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,::1/128,fc00::/7

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080 1978

# Liveness only (/healthz). Load balancers should route on /readyz, which turns 503
# as soon as a shutdown begins; see deploy/README.md.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/tidemark", "healthcheck"]

# Exec form: tidemark is PID 1 and receives SIGTERM itself (a shell would swallow it),
# drains (--drain-delay, then --shutdown-timeout), flushes the store and exits 0.
# Give `docker stop -t` / stop_grace_period more than drain delay + shutdown timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tidemark"]
CMD ["serve"]
