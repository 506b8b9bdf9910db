# syntax=docker/dockerfile:1
# Lumen and lumen-sim in a small non-root runtime image (docs/deploy.md).
#   docker build -t lumen .
#   docker run -p 8080:8080 -e LUMEN_BACKENDS=http://gpu-1:8000 lumen

# The toolchain matches the one the benchmarks and CI use; the lockfile is honoured (--locked).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build output between builds; the binaries are copied out
# because the target directory is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lumen -p lumen-sim-bin \
    && mkdir -p /out \
    && cp target/release/lumen target/release/lumen-sim /out/

# glibc and libgcc are all the binaries need (rustls, no OpenSSL); slim keeps coreutils so a
# Kubernetes preStop `sleep` works on clusters without the native sleep action.
FROM debian:bookworm-slim
COPY --from=build /out/lumen /out/lumen-sim /usr/local/bin/
# Listen on every interface in a container; the rest comes from LUMEN_* or --config.
ENV LUMEN_SERVER__LISTEN=0.0.0.0:8080
# API, and the admin surface when server.admin_listen = "0.0.0.0:9090".
EXPOSE 8080 9090
# A numeric uid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
STOPSIGNAL SIGTERM
# /health stays on the API port even with an admin port; `lumen health` needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/lumen", "health", "--url", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["/usr/local/bin/lumen"]
