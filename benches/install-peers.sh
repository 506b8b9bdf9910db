#!/usr/bin/env bash
# Installs the routers `lumen-bench fleet --peers` compares Lumen with, vLLM's router and
# SGLang's model gateway (Rust binaries inside Python wheels), into a virtualenv of their own,
# never the repo's. Then: PEERS_VENV=<dir> ./benches/fleet.sh --quick --peers
# See docs/fleet-benchmark.md.
#
#   ./benches/install-peers.sh                  # into /tmp/peers-venv
#   ./benches/install-peers.sh ~/.venvs/peers
set -euo pipefail
venv="${1:-/tmp/peers-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet vllm-router==0.1.17 sglang-router==0.3.2
echo "installed: $venv/bin/vllm-router, $venv/bin/smg"
echo "run: PEERS_VENV=$venv ./benches/fleet.sh --quick --peers"
