#!/usr/bin/env bash
# The gateway benchmark, one command: builds release binaries, runs lumen-sim and Lumen on
# loopback, measures direct and through Lumen in the same run, writes benches/results/<date>.md.
# Extra arguments go to lumen-bench (e.g. --seconds 10 --soak 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p lumen -p lumen-sim-bin -p lumen-bench
mkdir -p benches/results
out="benches/results/$(date -u +%Y-%m-%d).md"
./target/release/lumen-bench --out "$out" "$@"
echo "wrote $out"
