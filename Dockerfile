# Builds both binaries: `postsub` (proxy, worker, CLI) and `collect-backend` (demo backend).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin postsub --bin collect-backend

FROM debian:bookworm-slim
# ca-certificates: webhooks over https and Google's APIs need the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/postsub /src/target/release/collect-backend /usr/local/bin/
USER 65534
ENTRYPOINT ["postsub"]
CMD ["serve"]
