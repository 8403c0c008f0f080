#!/usr/bin/env bash
# The main job: installs what anylb needs, builds it, and runs the demo cluster in network namespaces — a client,
# an FRR router doing ECMP, two anylb nodes (DPDK dataplane on net_af_packet, BGP, health checks) and three HTTP
# backends — from topology-tests/topologies/demo.clab.yml. It shows the BGP sessions and services, sends traffic
# and shows how it spread over nodes and backends, fails a backend and then a node, and tears everything down.
# Run as root (namespaces, DPDK, FRR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building (release)"
cargo build --release -q -p anylb -p topology-tests
BIN="${CARGO_TARGET_DIR:-target}/release"
LAB=topology-tests/topologies/demo.clab.yml
trap '"$BIN/anylb-lab" down "$LAB" >/dev/null 2>&1 || true' EXIT INT TERM
"$BIN/anylb" config check topology-tests/topologies/demo/cluster.toml
"$BIN/anylb-lab" demo "$LAB" --anylb "$BIN/anylb"
