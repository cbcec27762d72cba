# knetsim in a container, as the seed project's image: build, then a Debian runtime
# with every real component knetsim drives. Run with:
#   docker build -t knetsim . && docker run -it --privileged --rm knetsim
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin knetsim

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 iputils-ping nftables nginx-light etcd-server etcd-client \
      containernetworking-plugins tcpdump tshark curl wget procps python3 less \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/knetsim /usr/local/bin/knetsim
COPY topologies /opt/knetsim/topologies
WORKDIR /opt/knetsim
# Brings up the default topology and opens a shell on C0w1; `knetsim down` ends it.
CMD ["sh", "-c", "knetsim up && exec knetsim shell C0w1"]
