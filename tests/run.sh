#!/usr/bin/env bash
# Runs Lumen's whole test suite. Installs what the tests need when it is missing, so a fresh
# machine needs nothing but a Rust toolchain (and apt-get, run as root, for system packages).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Redis backs the shared-state tests; they start their own server on a free port.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "== warning: missing ${need_apt[*]} and cannot install it (need root and apt-get)" >&2
  fi
fi

echo "== cargo test (workspace)"
cargo test --workspace --locked "$@"

echo "== examples (self-checking)"
cargo run -q --locked -p lumen-examples --example custom_backend >/dev/null
cargo run -q --locked -p lumen-examples --example embed_gateway >/dev/null
cargo run -q --locked -p lumen-examples --example embed_core >/dev/null
echo "== all tests passed"
