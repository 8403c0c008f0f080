#!/usr/bin/env bash
# The test command: installs dependencies, then checks formatting, lints and runs every test of the workspace.
# Tests that need root (network namespaces, DPDK vdevs) run for real; run this as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
echo "== cargo test"
log=$(mktemp /tmp/anylb-test.XXXXXX.log)
set +e
# Every test binary runs even after one fails, so that a run shows every failure, not only the first.
cargo test --workspace --locked --no-fail-fast > "$log" 2>&1
status=$?
set -e
grep -E '^(test result|running|error|failures)|FAILED|panicked' "$log" || true
# Counted from cargo's summary lines only: tests print "N failed" in their own output too (the soak's report).
passed=$(grep -E '^test result:' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
if [ "$status" -ne 0 ]; then
  sed -n '/^failures:/,/^test result/p' "$log" | head -n 300
fi
echo "$passed passed, $failed failed (full log: $log)"
exit "$status"
