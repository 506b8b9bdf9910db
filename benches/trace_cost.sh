#!/usr/bin/env bash
# Instructions per proxied request with trace export off and on (callgrind), for
# docs/observability.md. Release `lumen` under callgrind in front of release `lumen-sim`; a
# Python client sends N sequential non-streamed chat requests (16 tokens) on one keep-alive
# connection; counters are zeroed after a warm-up and dumped after the N requests, so only
# those requests (and whatever background work they caused, such as span export) are counted.
# "on" exports every span (always_on) to a local OTLP/HTTP sink that answers 200, with a
# 100 ms batch delay so the export work falls inside the window.
#
#   cargo build --release -p lumen -p lumen-sim-bin && benches/trace_cost.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
BIN=${BIN_DIR:-target/release}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
work=$(mktemp -d)
pids=()
# KEEP=1 keeps the callgrind files (for callgrind_annotate) and prints where they are.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "callgrind files in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
  for _ in $(seq 1 600); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; exit 1
}

sim_port=$(port); sink_port=$(port)
"$BIN/lumen-sim" --listen "127.0.0.1:$sim_port" --model m1 >/dev/null 2>&1 & pids+=($!)
python3 - "$sink_port" >/dev/null 2>&1 <<'PY' & pids+=($!)
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
wait_http "http://127.0.0.1:$sim_port/health"

client() { # port count
  python3 - "$1" "$2" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = b'{"model":"m1","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
       + b"content-length: %d\r\n\r\n" % len(body) + body)
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
ok = 0
for _ in range(n):
    s.sendall(req)
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    f.read(length)
    ok += status.startswith(b"HTTP/1.1 200")
assert ok == n, f"{ok} of {n} succeeded"
PY
}

run() { # label, extra env...
  local label=$1; shift
  local lport; lport=$(port)
  env -i PATH="$PATH" "$@" LUMEN_BACKENDS="http://127.0.0.1:$sim_port" \
    LUMEN_SERVER__LISTEN="127.0.0.1:$lport" LUMEN_LOG__LEVEL=info LUMEN_LOG__FORMAT=json \
    LUMEN_HEALTH__ENABLED=false \
    valgrind --tool=callgrind --callgrind-out-file="$work/$label.%p" "$BIN/lumen" \
    >/dev/null 2>"$work/$label.log" &
  local vpid=$!
  wait_http "http://127.0.0.1:$lport/ready"
  client "$lport" 200
  callgrind_control -z "$vpid" >/dev/null
  client "$lport" "$N"
  # Let the last batch go out (the "on" run's schedule delay is 100 ms).
  sleep 1
  callgrind_control -d "$vpid" >/dev/null
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  local ir
  ir=$(grep -h '^summary:\|^totals:' "$work/$label".*.1 2>/dev/null | head -1 | awk '{print $2}')
  if [ -z "$ir" ]; then
    ir=$(ls "$work/$label".* | grep -v log | xargs grep -h '^summary:\|^totals:' | sort -k2 -n | tail -1 | awk '{print $2}')
  fi
  echo "$label: $ir instructions for $N requests = $((ir / N)) per request"
}

run off
run on OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_TRACES_SAMPLER=always_on \
  OTEL_BSP_SCHEDULE_DELAY=100
