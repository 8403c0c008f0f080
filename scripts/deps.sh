#!/usr/bin/env bash
# Installs what anylb needs on Debian 12 (bookworm): a C toolchain, DPDK 22.11, libclang for bindgen, libpcap,
# the BGP peers used in tests (FRR, BIRD, GoBGP), iproute2 and traffic tools, and a Rust toolchain when there
# is none. Quick when everything is there already.
set -euo pipefail

PKGS=(build-essential pkg-config libclang-dev clang libdpdk-dev dpdk dpdk-dev libpcap-dev ethtool
      frr bird2 gobgpd iproute2 tcpdump iperf3 curl python3 procps iputils-ping
      python3-grpcio python3-prometheus-client python3-jsonschema python3-yaml dnsmasq-base)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "deps: installing Rust with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
echo "deps: ok ($(cargo --version))"
