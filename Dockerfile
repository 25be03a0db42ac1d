# syntax=docker/dockerfile:1.7
# tradewatch in a container: `docker build -t tradewatch .`, or `docker compose up` for the
# whole local stack (docker-compose.yml). Multi-stage: the Rust toolchain stays in the
# builder; the runtime image holds the binary, CA certificates and a non-root user.

# rust-version in Cargo.toml is 1.88.
FROM rust:1.88.0-slim-bookworm AS builder
WORKDIR /src
# Dependencies first, in their own layer: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit. Stub targets let cargo resolve and compile
# the dependency graph; the stubs' own artefacts are removed before the real build.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in $(awk '/^\[\[bench\]\]/ {b = 1; next} b && /^name = / {gsub(/"/, "", $3); print $3; b = 0}' Cargo.toml); do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin tradewatch \
 && rm -rf src benches target/release/.fingerprint/tradewatch-* target/release/deps/tradewatch-* target/release/deps/libtradewatch-*
COPY src src
COPY benches benches
# The demo's simulated bot answers with the recorded Freqtrade responses (include_str!).
COPY tests/fixtures/freqtrade tests/fixtures/freqtrade
RUN cargo build --release --locked --bin tradewatch \
 && install -D -m 0755 target/release/tradewatch /out/tradewatch

FROM debian:12.11-slim
# ca-certificates for https:// exporters; a system user; relative paths in a config start at
# its folder, so the shipped config.toml's out/ and data/ are links into the state directory.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tradewatch \
 && useradd --system --uid 10001 --gid tradewatch --home-dir /var/lib/tradewatch --shell /usr/sbin/nologin tradewatch \
 && install -d -o tradewatch -g tradewatch -m 0750 /var/lib/tradewatch \
 && install -d -m 0755 /etc/tradewatch \
 && ln -s /var/lib/tradewatch/out /etc/tradewatch/out \
 && ln -s /var/lib/tradewatch/data /etc/tradewatch/data
COPY --from=builder /out/tradewatch /usr/local/bin/tradewatch
COPY config.toml /etc/tradewatch/config.toml
COPY pipelines /etc/tradewatch/pipelines
# The shipped config.toml listens on loopback unless told otherwise; in a container the
# listeners must face the container network.
ENV TRADEWATCH_OTLP_GRPC=0.0.0.0:4317 \
    TRADEWATCH_OTLP_HTTP=0.0.0.0:4318 \
    TRADEWATCH_SERVICE_HTTP=0.0.0.0:13133 \
    TRADEWATCH_DATA=/var/lib/tradewatch/data
USER tradewatch:tradewatch
WORKDIR /var/lib/tradewatch
# OTLP gRPC, OTLP HTTP, the prometheus exporter, the service port (/health, /status, /metrics, /ui).
EXPOSE 4317 4318 9464 13133
# No curl in the image: the binary probes its own /health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["tradewatch", "healthcheck", "--url", "http://127.0.0.1:13133/health"]
ENTRYPOINT ["tradewatch"]
CMD ["run", "--config", "/etc/tradewatch/config.toml"]
