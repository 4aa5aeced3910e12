# syntax=docker/dockerfile:1
#
# One image with every Isame binary: isame-lb (data plane), isame-control-plane,
# isame-ctl and isame-echo (the demo backend). The services of
# docker-compose.yml all run this image and differ only in their command, so
# the workspace is compiled once. See docs/deploy.md.
#
#   docker build -t isame:dev .
#   docker run --rm isame:dev isame-lb --help

# The toolchain must be at least the newest rust-version among the crates that
# Cargo.lock pins (1.91 today, for notify-types; the workspace's rust-version
# says the same); testkit/tests/compose.rs checks this. protox
# compiles the .proto files in Rust, so no protoc is needed; the C compiler for
# ring and mimalloc comes with this image.
ARG RUST_VERSION=1.91
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target/ live in cache mounts, so a rebuild after a source
# change recompiles only the crates that changed. The cache mount is not part
# of the image, so the binaries are copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
        --bin isame-lb \
        --bin isame-control-plane \
        --bin isame-ctl \
        --bin isame-echo \
 && mkdir -p /out \
 && cp target/release/isame-lb \
       target/release/isame-control-plane \
       target/release/isame-ctl \
       target/release/isame-echo \
       /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates: https:// backends and a TLS control plane are verified
# against the system's roots. curl: the compose health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed, unprivileged user. The directories the services write to belong to
# it, and a named volume mounted there starts with that ownership.
RUN groupadd --system --gid 10001 isame \
 && useradd --system --uid 10001 --gid isame --home-dir /var/lib/isame \
        --no-create-home --shell /usr/sbin/nologin isame \
 && install -d -o isame -g isame -m 0750 /var/lib/isame /var/cache/isame \
 && install -d -m 0755 /etc/isame
COPY --from=builder /out/ /usr/local/bin/
USER isame:isame
WORKDIR /var/lib/isame
# data plane: proxy 8080, HTTPS 8443, admin 9090; control plane: REST 7070,
# gRPC 7071; isame-echo: 3000 in the compose file.
EXPOSE 8080 8443 9090 7070 7071
CMD ["isame-lb", "--help"]
