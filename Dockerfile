# syntax=docker/dockerfile:1.7
# Cache mounts below need BuildKit: the default for `docker build` and `docker compose`;
# with the old docker-compose v1, export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1.

FROM rust:1.95-bookworm AS build

# cmake and BLAS/LAPACK are for the vendored FAISS build that memory will link against;
# installed ahead of it so that change does not also have to touch this file.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libopenblas-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The whole workspace, migrations included: sqlx::migrate! embeds them at compile time.
COPY . .

# Registry and target live in cache mounts so a source change recompiles only the workspace
# crates, not every dependency. The target dir is not part of the layer, so the binary is
# copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/app/target,sharing=locked \
    cargo build --release --locked -p api --bin orchestrator \
    && cp target/release/orchestrator /usr/local/bin/orchestrator


FROM debian:bookworm-slim AS runtime

# Shared libraries the FAISS-enabled binary will load; curl is only for health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl libgfortran5 libgomp1 libopenblas0 libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid keeps ownership of mounted volumes stable across rebuilds.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin orchestrator

# Created and chowned before VOLUME so a fresh volume inherits the ownership and the
# non-root process can write its snapshots there.
ENV DATA_DIR=/var/lib/orchestrator
RUN mkdir -p "$DATA_DIR" && chown orchestrator:orchestrator "$DATA_DIR"
VOLUME ["/var/lib/orchestrator"]

COPY --from=build /usr/local/bin/orchestrator /usr/local/bin/orchestrator

WORKDIR /app
USER orchestrator:orchestrator

# The binary defaults to loopback, which is unreachable from outside a container; off
# loopback, keys are required (pass BOOTSTRAP_ADMIN_KEY for a first admin key).
ENV BIND_ADDR=0.0.0.0:8000 AUTH=required
# Idle OpenMP/BLAS threads otherwise spin after an index build and slow single searches
# (measured: search p50 0.9 ms → 8 ms); searches are one query at a time anyway.
ENV OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1
EXPOSE 8000

# Liveness only (/healthz touches no dependency), so a database outage does not get the
# container killed. The port follows BIND_ADDR in case it is overridden. Roles without an
# HTTP listener (worker, migrate) should disable this check.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${BIND_ADDR##*:}/healthz" || exit 1

# Exec form keeps orchestrator as PID 1, so SIGTERM reaches it and in-flight work drains.
ENTRYPOINT ["orchestrator"]
CMD ["run"]
