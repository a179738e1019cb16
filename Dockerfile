# Build
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/pdex

# Run
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/pdex pdex \
    && mkdir -p /var/lib/pdex && chown pdex /var/lib/pdex
COPY --from=build /src/target/release/pdex /usr/local/bin/pdex
COPY --from=build /src/fixtures /opt/pdex/fixtures
COPY --from=build /src/config /opt/pdex/config
USER pdex
WORKDIR /opt/pdex
ENV PDEX_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["pdex"]
CMD ["serve"]
