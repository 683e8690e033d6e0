# syntax=docker/dockerfile:1
#
# The nexusd container image. Cloud Run runs it as `nexusd proxy` (terraform/cloud_run.tf); the
# VM runs the same binary, installed by cloud-init from a URL, not from this image.
#
#   docker build -t us-central1-docker.pkg.dev/PROJECT/nexusd/nexusd:0.1.0 .
#   docker push us-central1-docker.pkg.dev/PROJECT/nexusd/nexusd:0.1.0
#
# Not built on the development machine: it has no Docker engine. Needs BuildKit (the default in
# current Docker) for the cache mounts.

ARG RUST_VERSION=1.91

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Only what the build reads; BuildKit then never sends target/ from the build context.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nexusd \
    && install -D -m 0755 target/release/nexusd /out/nexusd

# glibc, libgcc and CA certificates only (the binary is built on the same Debian 12); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/nexusd /usr/local/bin/nexusd
# uid/gid 65532
USER nonroot:nonroot
# NEXUSD_API_ADDR defaults to 0.0.0.0:8080, Cloud Run's port.
EXPOSE 8080
ENTRYPOINT ["nexusd"]
CMD ["proxy"]
