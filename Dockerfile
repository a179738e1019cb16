# Build
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/pdex

# Run. The binary carries the demo set (`serve --demo` reads no files). It runs as the
# unprivileged user `pdex` in the root-owned /opt/pdex; everything it writes — the SQLite
# database, export files, the demo kit — goes under /var/lib/pdex, a volume owned by `pdex`.
# `.ci/check-image` checks this file and docker-compose.yml against the binary's defaults.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/pdex --shell /usr/sbin/nologin pdex \
    && mkdir -p /var/lib/pdex/exports && chown -R pdex:pdex /var/lib/pdex
COPY --from=build /src/target/release/pdex /usr/local/bin/pdex
COPY --from=build /src/config/pdex.toml.example /opt/pdex/config/pdex.toml.example
ENV PDEX_LISTEN=0.0.0.0:8080 \
    PDEX_DATABASE_URL=sqlite:///var/lib/pdex/pdex.db \
    PDEX_EXPORT_DIR=/var/lib/pdex/exports
VOLUME /var/lib/pdex
USER pdex
WORKDIR /opt/pdex
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["pdex"]
CMD ["serve"]
