# syntax=docker/dockerfile:1
# Build a static (musl) binary, ship it alone in an empty image as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY crates/decide/Cargo.toml crates/decide/
RUN mkdir -p src crates/decide/src && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/decide/src/lib.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
    && rm -rf src crates/decide/src
COPY src ./src
COPY crates ./crates
RUN touch src/main.rs src/lib.rs crates/decide/src/lib.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/kube-fencer /kube-fencer

FROM scratch
COPY --from=build /kube-fencer /kube-fencer
USER 65532:65532
EXPOSE 9746
ENTRYPOINT ["/kube-fencer"]
