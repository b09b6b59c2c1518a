# syntax=docker/dockerfile:1

# pvc-guard: the admission webhook image.
#
#   docker build -t ghcr.io/pvc-guard/pvc-guard:dev .
#
# The final image holds the binary on distroless (glibc, CA
# certificates, no shell), runs as the distroless nonroot user 65532 and
# starts `pvc-guard serve`; manifests/base/deployment.yaml passes the flags.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build
COPY Cargo.toml Cargo.lock build.rs ./
# Cargo reads every target the manifest declares, the benchmarks' too.
COPY benches ./benches
# build.rs embeds manifests/ for `pvc-guard install`.
COPY manifests ./manifests
COPY src ./src
# BuildKit cache mounts keep the crate registry and the target directory
# between builds, so a source change does not refetch or rebuild every crate.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin pvc-guard \
    && install -D -m 0755 target/release/pvc-guard /out/pvc-guard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/pvc-guard /usr/local/bin/pvc-guard
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/pvc-guard", "serve"]
