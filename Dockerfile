# The anylb image: the `anylb` binary with the DPDK 22.11 runtime, and the tools the containerlab topologies
# use in their nodes (iproute2, python3, curl). Multi-stage: the binary is built against Debian 12's DPDK
# headers, then copied onto Debian 12 slim with the runtime libraries only.
#
#   docker build --build-arg ANYLB_COMMIT=$(git rev-parse --short=12 HEAD) -t anylb:latest .
#   (or podman build / buildah bud with the same arguments)
#
# The base images are arguments, for builders that cannot pull from a registry (see docs/packaging.md).
ARG BUILDER=docker.io/library/rust:1-bookworm
ARG RUNTIME=docker.io/library/debian:bookworm-slim

FROM ${BUILDER} AS build
# The commit `anylb --version` names (.git is not copied): --build-arg ANYLB_COMMIT=$(git rev-parse --short=12 HEAD)
ARG ANYLB_COMMIT=unknown
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config clang libclang-dev libdpdk-dev libpcap-dev git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN ANYLB_COMMIT="${ANYLB_COMMIT}" cargo build --release --locked -p anylb \
 && strip -o /anylb target/release/anylb

FROM ${RUNTIME}
# `dpdk` with its recommended packages: the EAL, ethdev and mempool libraries and the poll-mode drivers
# (af_packet for the containerlab topologies, the usual NICs for real ones).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y dpdk librte-ethdev23 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 python3 curl ca-certificates procps \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /anylb /usr/bin/anylb
COPY packaging/entrypoint.sh /usr/local/bin/anylb-entrypoint
COPY examples/anylb@.service /usr/share/doc/anylb/anylb@.service
RUN anylb --version \
 && anylb completions bash > /usr/share/bash-completion/completions/anylb \
 && mkdir -p /usr/share/man/man1 && anylb man | gzip > /usr/share/man/man1/anylb.1.gz
ENTRYPOINT ["/usr/local/bin/anylb-entrypoint"]
CMD ["anylb", "--help"]
