# syntax=docker/dockerfile:1
# knetsim in a container: a Rust build stage, then a Debian runtime with every real
# component knetsim drives, installed by the same script CI uses (.ci/deps: iproute2,
# nftables, nginx, etcd, the CNI plugins, tcpdump/tshark, graphviz, ...).
#
#   docker build -t knetsim .
#   docker run -it --privileged --rm knetsim                  # default topology, knetsim> prompt
#   docker run -it --privileged --rm knetsim up --cli /opt/knetsim/topologies/chain3.toml
#   docker run --rm knetsim graph --format svg > topology.svg
#   docker run -it --privileged --rm --entrypoint bash knetsim   # a shell; then `knetsim up --cli`
#
# --privileged lets knetsim create network namespaces, veths, bridges, VXLAN devices and
# nftables rules; all of them live inside the container's own network namespace.
# Leaving the prompt (`exit`) tears the emulation down.
#
# A real flanneld instead of the built-in agent (knetsim runs a `flanneld` it finds on
# PATH): --build-arg FLANNEL_VERSION=0.26.1 fetches flannel's release binary from GitHub.
# skupper-router (skrouterd) publishes no standalone binary (it is built from C sources or
# shipped inside its own container image), so the image uses knetsim's built-in router.

ARG DEBIAN_RELEASE=bookworm

FROM rust:1-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and build output between builds; the binary is copied out
# of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin knetsim \
 && install -m 0755 target/release/knetsim /usr/local/bin/knetsim

FROM debian:${DEBIAN_RELEASE}-slim AS flanneld
ARG FLANNEL_VERSION=""
ARG TARGETARCH
# hadolint ignore=DL3008
RUN mkdir -p /out \
 && if [ -n "${FLANNEL_VERSION}" ]; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
      && curl -fsSL -o /out/flanneld \
         "https://github.com/flannel-io/flannel/releases/download/v${FLANNEL_VERSION}/flanneld-${TARGETARCH:-amd64}" \
      && chmod 0755 /out/flanneld \
      && /out/flanneld --version; \
    fi

FROM debian:${DEBIAN_RELEASE}-slim
COPY .ci/deps /usr/local/share/knetsim/deps
RUN bash /usr/local/share/knetsim/deps \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/knetsim /usr/local/bin/knetsim
# Empty unless FLANNEL_VERSION was given.
COPY --from=flanneld /out/ /usr/local/bin/
COPY topologies /opt/knetsim/topologies
COPY conf /opt/knetsim/conf
WORKDIR /opt/knetsim
ENTRYPOINT ["knetsim"]
# The default topology (embedded in knetsim), then the knetsim> prompt.
CMD ["up", "--cli"]
