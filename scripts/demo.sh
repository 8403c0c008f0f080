#!/usr/bin/env bash
# The main job. Until the demo cluster in network namespaces lands (issue 8), it builds anylb and walks through
# the example topologies: checks every file, shows one node resolved, and shows what a reload would change.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release -q -p anylb
ANYLB=target/release/anylb
[ -n "${CARGO_TARGET_DIR:-}" ] && ANYLB="$CARGO_TARGET_DIR/release/anylb"

echo "== anylb config check examples/*.toml"
for f in examples/*.toml; do "$ANYLB" config check "$f"; done

echo
echo "== anylb config show examples/ecmp-cluster.toml --node lb1 (first lines)"
"$ANYLB" config show examples/ecmp-cluster.toml --node lb1 | head -n 30

echo
echo "== a broken topology: every error with file:line:column"
"$ANYLB" config check conf/tests/fixtures/three-errors.toml || echo "(exit $?)"

echo
echo "== anylb config diff: a weight change and a new backend"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sed -e 's/weight = 50/weight = 80/' -e 's/{ address = "198.51.100.102" },/{ address = "198.51.100.102" },\n  { address = "198.51.100.104" },/' \
  examples/ecmp-cluster.toml > "$tmp/new.toml"
"$ANYLB" config diff examples/ecmp-cluster.toml "$tmp/new.toml" --node lb1
