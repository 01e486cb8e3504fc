# syntax=docker/dockerfile:1
# The kappa image: one binary, used by the kappa, topics and loadgen services of
# docker-compose.yml. Build alone with `docker build -t kappa .`, then e.g.
# `docker run --rm kappa --help`.

FROM rust:1-bookworm AS builder
# rdkafka-sys builds the bundled librdkafka from C with its configure script and make;
# zlib1g-dev for its compression (libz-sys links the system zlib), libssl-dev for SASL
# SCRAM and TLS (openssl-sys links the system OpenSSL).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the crate needs to build: edits to docs, grafana/ or tests/ keep this layer.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts keep the registry and target/ across builds (BuildKit, the default
# builder of current Docker); the binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kappa \
 && install -D -m 0755 target/release/kappa /out/kappa

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --uid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin kappa \
 && mkdir -p /data \
 && chown kappa:kappa /data
WORKDIR /app
COPY --from=builder /out/kappa /app/kappa
# `kappa topics apply` reads topics/*.toml relative to the working directory (/app).
COPY topics/ /app/topics/
# In a container the data lives on the /data volume and the HTTP server must listen on
# every interface; both are ordinary configuration keys (see `kappa config`).
ENV KAPPA_DATA_DIR=/data \
    KAPPA_HTTP__LISTEN=0.0.0.0:9464
USER kappa
EXPOSE 9464
# kappa stops gracefully (commits, then exits) on SIGINT; Docker's default SIGTERM would
# be ignored by PID 1 and end in a SIGKILL after the grace period.
STOPSIGNAL SIGINT
ENTRYPOINT ["/app/kappa"]
CMD ["--help"]
