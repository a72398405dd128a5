# syntax=docker/dockerfile:1
# Build a static (musl) binary, ship it alone in an empty image as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Dependencies first, so source edits do not rebuild them: every workspace
# member's manifest, with empty targets, so cargo can load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY crates/decide/Cargo.toml crates/decide/
COPY crates/watchdog/Cargo.toml crates/watchdog/
COPY crates/protocol-check/Cargo.toml crates/protocol-check/
COPY crates/fakewdog/Cargo.toml crates/fakewdog/
RUN mkdir -p src crates/decide/src crates/watchdog/src crates/protocol-check/src crates/fakewdog/src \
    && for f in src/main.rs crates/protocol-check/src/main.rs crates/fakewdog/src/main.rs; do \
         echo 'fn main() {}' > "$f"; done \
    && touch src/lib.rs crates/decide/src/lib.rs crates/watchdog/src/lib.rs crates/protocol-check/src/lib.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl -p kube-fencer \
    && rm -rf src crates
COPY src ./src
COPY crates ./crates
RUN touch src/main.rs src/lib.rs crates/decide/src/lib.rs crates/watchdog/src/lib.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl -p kube-fencer \
    && cp target/x86_64-unknown-linux-musl/release/kube-fencer /kube-fencer

FROM scratch
COPY --from=build /kube-fencer /kube-fencer
USER 65532:65532
EXPOSE 9746
ENTRYPOINT ["/kube-fencer"]
