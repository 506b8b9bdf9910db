#!/usr/bin/env bash
# The fleet benchmark (issue 21): routing policies on four simulated vLLM-like engines
# (lumen-sim --engine: paged KV cache, prefix caching, batching, a queue) behind one or three
# Lumen replicas, three workloads open loop at shares of the fleet's capacity. Writes
# benches/results/fleet-<date>.md, or the file FLEET_OUT names (a second run on one day must
# not overwrite the first). See docs/fleet-benchmark.md.
#
#   ./benches/fleet.sh --quick       # 80% load, short windows, quarter-size caches: ~5 min
#   ./benches/fleet.sh               # 50/80/95% load, 20 s warm-up + 60 s per cell: ~75 min
#   ./benches/fleet.sh --policies round_robin,prefix_affinity,cache_aware --replicas 3
#   FLEET_OUT=benches/results/fleet-2026-12-06c.md ./benches/fleet.sh --quick
#   PEERS_VENV=/tmp/peers-venv ./benches/fleet.sh --quick --peers   # vLLM's and SGLang's routers
#                                     # too (./benches/install-peers.sh puts them there)
#
# Arguments go to `lumen-bench fleet` (see `lumen-bench fleet --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
echo "== building release binaries"
nice -n 10 cargo build --release --locked -q -p lumen -p lumen-sim-bin -p lumen-bench
# The peer routers' virtualenv, if named, goes first on PATH (--peers finds them there).
if [[ -n "${PEERS_VENV:-}" ]]; then
  export PATH="$PEERS_VENV/bin:$PATH"
fi
mkdir -p benches/results
out="${FLEET_OUT:-benches/results/fleet-$(date -u +%Y-%m-%d).md}"
label="Lumen $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ)"
"$target/release/lumen-bench" fleet --label "$label" --out "$out" "$@"
echo "wrote $out"
