#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable to about 0.1 % whatever
# else the machine is doing, so two builds can be compared on a busy or noisy machine where
# wall-clock figures cannot separate them.
#
#   benches/callgrind.sh [LUMEN_BINARY ...]     (default: target/release/lumen)
#
# For each binary: lumen-sim on loopback, Lumen under callgrind with governance on (an API key
# with in-memory limits, metrics, request ids; access log off), wrk with 8 connections for 10 s
# of non-streamed chat (16 tokens), then 10 s of 64-token streams; an idle run of the same
# length is subtracted. Lumen's user space only (system calls are not instructions it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null && command -v wrk >/dev/null || {
  echo "needs valgrind and wrk (apt-get install valgrind wrk)" >&2
  exit 1
}
[ $# -gt 0 ] || set -- target/release/lumen
sim_bin=${SIM_BIN:-target/release/lumen-sim}
[ -x "$sim_bin" ] || cargo build --release --locked -q -p lumen-sim-bin
secs=${SECONDS_PER_RUN:-10}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
"$sim_bin" --listen "127.0.0.1:$sim_port" --model m --threads 1 >/dev/null 2>&1 &
sleep 0.5

cat >"$work/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
LUA
sed 's/"max_tokens":16}/"max_tokens":64,"stream":true}/' "$work/chat.lua" >"$work/stream.lua"

# One Lumen under callgrind; $1 the binary, $2 the wrk script or "idle". Prints
# "<instructions> <requests>".
run() {
  local bin=$1 load=$2 port out
  port=$(free_port)
  out="$work/cg.$RANDOM"
  env -i PATH="$PATH" \
    LUMEN_BACKENDS="http://127.0.0.1:$sim_port" \
    LUMEN_SERVER__LISTEN="127.0.0.1:$port" \
    LUMEN_AUTH__ENABLED=true \
    LUMEN_AUTH__KEYS='[{name="bench", sha256="c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29", limits={rpm=1000000000, tpm=1000000000000, max_concurrent=100000}}]' \
    LUMEN_LOG__LEVEL=warn \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local requests=0
  if [ "$load" = idle ]; then
    sleep "$secs"
  else
    requests=$(wrk -t 1 -c 8 -d "${secs}s" -s "$load" "http://127.0.0.1:$port/v1/chat/completions" |
      awk '/requests in/ {print $1}')
  fi
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
  echo "$total $requests"
}

printf '%-40s %14s %14s\n' binary "per request" "per stream"
for bin in "$@"; do
  read -r idle _ < <(run "$bin" idle)
  read -r chat n_chat < <(run "$bin" "$work/chat.lua")
  read -r stream n_stream < <(run "$bin" "$work/stream.lua")
  per_chat=$(( (chat - idle) / n_chat ))
  per_stream=$(( (stream - idle) / n_stream ))
  printf '%-40s %14s %14s   (%s requests, %s streams)\n' "$bin" "$per_chat" "$per_stream" "$n_chat" "$n_stream"
done
