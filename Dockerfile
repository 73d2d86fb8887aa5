# syntax=docker/dockerfile:1
# Cedar's image: built with the Rust toolchain, run on Debian slim as a non-root user with
# nothing but the binary, CA certificates and the PostgreSQL client (pg_dump for backups).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The linker's function order (build.rs, bench/order.sh): what serving runs sits together.
COPY build ./build
# sqlx-core with one early return in its pool (vendor/README.md).
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin cedar && strip target/release/cedar

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/cedar --create-home cedar \
    && install -d -o cedar -g cedar /var/lib/cedar-backups
COPY --from=build /src/target/release/cedar /usr/local/bin/cedar
USER cedar
WORKDIR /var/lib/cedar
ENV CEDAR_DATA_DIR=/var/lib/cedar \
    CEDAR_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["cedar", "healthcheck", "--url", "http://127.0.0.1:8000/ready"]
ENTRYPOINT ["cedar"]
CMD ["serve", "--no-worker", "--addr", "0.0.0.0:8000"]
