# The gateway as a container: built in a full Rust image, run in a slim one
# as an unprivileged user. Settings that differ per environment come from
# environment variables (README: "Deploying to production").
#
#   docker build -t migration-gateway .
#   docker run -p 8080:8080 -p 9080:9080 \
#     -e GATEWAY_KAFKA_BOOTSTRAP=broker:9092 migration-gateway

FROM rust:1.95-bookworm AS build
# librdkafka is compiled by the rdkafka crate, against the system's OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway --bin gateway \
 && cp target/release/gateway /gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home gateway \
 && mkdir -p /var/lib/gateway/spool \
 && chown -R 10001:10001 /var/lib/gateway
COPY --from=build /gateway /usr/local/bin/gateway
COPY schemas /etc/gateway/schemas
COPY routes.toml /etc/gateway/routes.toml
# A container listens on every interface; the admin port carries the probes
# (writes need a token, README "Admin port").
ENV GATEWAY_CONFIG=/etc/gateway/routes.toml \
    GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_ADMIN_LISTEN=0.0.0.0:9080 \
    GATEWAY_SPOOL_DIR=/var/lib/gateway/spool \
    GATEWAY_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080 9080
VOLUME ["/var/lib/gateway/spool"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway", "serve"]
