#!/usr/bin/env python3
"""Sizing measurement for docs/deploy.md: what 1,000 open streams and 1,000 req/s cost Lumen.

Starts release `lumen-sim` (slow tokens) and `lumen` on loopback, then:

1. streams: opens N concurrent streamed chat completions through Lumen and holds them (the
   simulator sends one token every --itl-ms), and reads Lumen's RSS, open descriptors and CPU
   (utime + stime from /proc) before, while they are held, and after they are closed;
2. rate: sends non-streamed chat completions (16 tokens) at a fixed rate on keep-alive
   connections for --seconds and reads Lumen's CPU over that window;
3. bodies (--bodies N, first, on a fresh Lumen): N chat requests of --body-mb MB each at once,
   and Lumen's peak RSS (VmHWM) and RSS --bodies-settle seconds later, with each answer's status;
4. admission (--admission N): N streams opened at once with Lumen's own admission settings
   (the default profile unless --set changes them), counted by outcome (200, or status and
   error code).

Only the Python standard library; the load generator shares the machine's cores, so only
Lumen's own CPU (from /proc/<pid>/stat) is reported. Extra environment (e.g.
OTEL_EXPORTER_OTLP_ENDPOINT) is passed to Lumen as is.

    cargo build --release -p lumen -p lumen-sim-bin
    python3 benches/sizing.py --streams 1000 --itl-ms 100 --rate 1000
    python3 benches/sizing.py --streams 0 --rate 0 --bodies 8 --body-mb 30 --body-shape escaped
    python3 benches/sizing.py --streams 0 --rate 0 --admission 2000
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc(pid):
    """(rss_kb, fds, cpu_seconds) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return rss, fds, cpu


async def wait_ready(port, path="/ready", deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
            await w.drain()
            data = await r.read()
            w.close()
            if data.startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"nothing ready on port {port}")


def request(body, stream=False):
    payload = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )


class Streams:
    def __init__(self):
        self.events = 0
        self.started = 0
        self.errors = 0
        self.first_error = None


async def hold_stream(port, stats, max_tokens, stop):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        stats.errors += 1
        stats.first_error = stats.first_error or repr(e)
        return
    body = {
        "model": "slow",
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hold this stream open"}],
    }
    w.write(request(body))
    await w.drain()
    first = True
    try:
        while not stop.is_set():
            chunk = await r.read(65536)
            if not chunk:
                break
            if first:
                if not chunk.startswith(b"HTTP/1.1 200"):
                    stats.errors += 1
                    stats.first_error = stats.first_error or chunk[:300]
                    break
                stats.started += 1
                first = False
            stats.events += chunk.count(b"data: ")
    finally:
        w.close()


async def streams_phase(args, lumen, port):
    stats = Streams()
    stop = asyncio.Event()
    base = proc(lumen.pid)
    tasks = []
    # Ramp up (25 every 50 ms): a thousand simultaneous connects overflow the engine's accept
    # backlog, and Lumen would report connect timeouts rather than hold streams.
    for i in range(args.streams):
        tasks.append(asyncio.create_task(hold_stream(port, stats, args.max_tokens, stop)))
        if i % 25 == 24:
            await asyncio.sleep(0.05)
    end = time.monotonic() + 60
    while stats.started + stats.errors < args.streams and time.monotonic() < end:
        await asyncio.sleep(0.1)
    await asyncio.sleep(args.settle)
    e0, (rss0, fds0, cpu0), t0 = stats.events, proc(lumen.pid), time.monotonic()
    await asyncio.sleep(args.seconds)
    e1, (rss1, fds1, cpu1), t1 = stats.events, proc(lumen.pid), time.monotonic()
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(2)
    after = proc(lumen.pid)
    held = stats.started
    cores = (cpu1 - cpu0) / (t1 - t0)
    events = (e1 - e0) / (t1 - t0)
    print(f"## {held} open streams (errors {stats.errors}), one token every {args.itl_ms} ms")
    if stats.first_error:
        print(f"- first error: {stats.first_error}")
    print(f"- Lumen RSS before: {base[0] / 1024:.1f} MB, while held: {max(rss0, rss1) / 1024:.1f} MB, "
          f"after closing: {after[0] / 1024:.1f} MB")
    per_k = (max(rss0, rss1) - base[0]) / 1024 / held * 1000 if held else 0
    print(f"- RSS per 1,000 open streams: {per_k:.1f} MB")
    print(f"- descriptors: {base[1]} before, {max(fds0, fds1)} while held (client + engine socket per stream)")
    print(f"- events relayed: {events:.0f}/s; Lumen CPU: {cores:.3f} cores "
          f"= {cores / events * 1e6 if events else 0:.2f} µs per event")
    print(f"- CPU per 1,000 open streams at this token rate: {cores / held * 1000 if held else 0:.3f} cores")
    return stats


def body_of(mb, shape):
    """A chat request of about `mb` MB in one of issue 24's shapes: one long plain message,
    every character `\\u`-escaped (the shape that costs most to parse), an unknown member
    holding a big array, or many small messages."""
    n = mb * 1_000_000
    head = '{"model":"slow","max_tokens":1,"messages":['
    hi = '{"role":"user","content":"hi"}'
    if shape == "unknown_array":
        return (head + hi + '],"junk":[' + ",".join(["0"] * (n // 2)) + "]}").encode()
    if shape == "many_messages":
        return (head + ",".join([hi] * (n // (len(hi) + 1))) + "]}").encode()
    content = "\\u00e9" * (n // 6) if shape == "escaped" else "x" * n
    return (head + '{"role":"user","content":"' + content + '"}]}').encode()


async def read_answer(r):
    """(status, error code or None) of one HTTP/1.1 answer with a content-length."""
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await r.readexactly(length) if length else b""
    code = None
    if status != 200:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = body[:80]
    return status, code


async def post_large(port, payload):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode())

    async def send():
        # Lumen may answer (503) without reading the body, then close: not an error here.
        try:
            w.write(payload)
            await w.drain()
        except OSError:
            pass

    sender = asyncio.create_task(send())
    try:
        return await read_answer(r)
    except (OSError, asyncio.IncompleteReadError) as e:
        return "error", repr(e)
    finally:
        sender.cancel()
        w.close()


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def bodies_phase(args, lumen, port):
    payload = body_of(args.body_mb, args.body_shape)
    base = proc(lumen.pid)[0]
    t0 = time.monotonic()
    results = await asyncio.gather(*(post_large(port, payload) for _ in range(args.bodies)))
    took = time.monotonic() - t0
    peak = peak_rss_kb(lumen.pid)
    right_after = proc(lumen.pid)[0]
    await asyncio.sleep(args.bodies_settle)
    later = proc(lumen.pid)[0]
    outcomes = {}
    for status, code in results:
        key = str(status) if code is None else f"{status} {code}"
        outcomes[key] = outcomes.get(key, 0) + 1
    print(f"## {args.bodies} concurrent {args.body_shape} bodies of {len(payload) / 1e6:.1f} MB")
    print(f"- answers: {outcomes} in {took:.1f} s")
    print(f"- Lumen RSS before: {base / 1024:.1f} MB, peak (VmHWM): {peak / 1024:.1f} MB, "
          f"right after: {right_after / 1024:.1f} MB, {args.bodies_settle:.0f} s later: {later / 1024:.1f} MB")


async def admission_phase(args, port):
    """N streams at once; each counted by its first answer: 200 (held until all are counted),
    or a refusal's status and code."""
    stop = asyncio.Event()
    outcomes = {}

    async def one():
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            outcomes[repr(e)] = outcomes.get(repr(e), 0) + 1
            return
        body = {"model": "slow", "stream": True, "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": "hold this stream open"}]}
        w.write(request(body))
        try:
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200"):
                key = "200"
            else:
                r2 = asyncio.StreamReader()
                r2.feed_data(head + await r.read(65536))
                r2.feed_eof()
                status, code = await read_answer(r2)
                key = f"{status} {code}"
        except (OSError, asyncio.IncompleteReadError) as e:
            key = repr(e)
        outcomes[key] = outcomes.get(key, 0) + 1
        if key == "200":
            await stop.wait()
        w.close()

    t0 = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(args.admission)]
    while sum(outcomes.values()) < args.admission and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.1)
    took = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"## {args.admission} streams opened at once (admission as configured)")
    print(f"- outcomes: {dict(sorted(outcomes.items()))}, all counted after {took:.1f} s")


async def one_request(conn, body):
    r, w = conn
    w.write(body)
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await r.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def rate_phase(args, lumen, port):
    body = request({
        "model": "fast",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    })
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(args.connections)]
    free = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    ok = errors = late = 0

    async def fire():
        nonlocal ok, errors
        c = await free.get()
        try:
            if await one_request(c, body):
                ok += 1
            else:
                errors += 1
        finally:
            free.put_nowait(c)

    # Warm up, then measure over an exact number of scheduled requests.
    for _ in range(200):
        await fire()
    ok = errors = 0
    n = args.rate * args.seconds
    period = 1.0 / args.rate
    pending = []
    (_, _, cpu0), t0 = proc(lumen.pid), time.monotonic()
    for i in range(n):
        due = t0 + i * period
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            late += 1
        pending.append(asyncio.create_task(fire()))
    await asyncio.gather(*pending)
    (_, _, cpu1), t1 = proc(lumen.pid), time.monotonic()
    for _, w in conns:
        w.close()
    achieved = n / (t1 - t0)
    cores = (cpu1 - cpu0) / (t1 - t0)
    print(f"## {args.rate} req/s target, non-streamed chat (16 tokens), {args.connections} keep-alive connections")
    print(f"- achieved {achieved:.0f} req/s, {ok} ok, {errors} errors, {late} sent >50 ms late")
    print(f"- Lumen CPU: {cores:.3f} cores = {(cpu1 - cpu0) / n * 1e6:.1f} µs per request "
          f"= {cores / achieved * 1000:.3f} cores per 1,000 req/s")


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default="target/release")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--itl-ms", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=400,
                   help="tokens per held stream (lumen-sim prepares each whole answer up front)")
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rate", type=int, default=1000, help="0 skips the rate phase")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--log-level", default="info", help="Lumen's log.level (info writes the access log)")
    p.add_argument("--bodies", type=int, default=0, help="concurrent large bodies (0 skips the phase)")
    p.add_argument("--body-mb", type=int, default=30)
    p.add_argument("--body-shape", choices=["plain", "escaped", "unknown_array", "many_messages"],
                   default="plain")
    p.add_argument("--bodies-settle", type=float, default=30.0,
                   help="seconds after the bodies to read RSS again")
    p.add_argument("--admission", type=int, default=0,
                   help="streams opened at once against Lumen's own admission (0 skips the phase)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Lumen setting, e.g. admission.max_concurrent=2048 (repeatable)")
    args = p.parse_args()

    slow_port, fast_port, lumen_port = free_port(), free_port(), free_port()
    # Two engines: `slow` (one token every --itl-ms) for held streams, `fast` for the rate.
    sims = [
        subprocess.Popen(
            [f"{args.bin_dir}/lumen-sim", "--listen", f"127.0.0.1:{port}", "--model", model,
             "--itl-ms", str(itl)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for port, model, itl in [(slow_port, "slow", args.itl_ms), (fast_port, "fast", 0)]
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    env.update({
        "LUMEN_BACKENDS": f"http://127.0.0.1:{slow_port},http://127.0.0.1:{fast_port}",
        "LUMEN_SERVER__LISTEN": f"127.0.0.1:{lumen_port}",
        "LUMEN_LOG__LEVEL": args.log_level,
        "LUMEN_LOG__FORMAT": "json",
    })
    # The stream and rate phases measure Lumen itself, so without the admission cap; the
    # admission phase measures that cap as configured.
    if not args.admission:
        env["LUMEN_ADMISSION__MAX_CONCURRENT"] = "0"
    for kv in args.set:
        key, value = kv.split("=", 1)
        env["LUMEN_" + key.upper().replace(".", "__")] = value
    lumen = subprocess.Popen([f"{args.bin_dir}/lumen"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(slow_port, "/health")
        await wait_ready(fast_port, "/health")
        await wait_ready(lumen_port)
        if args.bodies:
            await bodies_phase(args, lumen, lumen_port)
        if args.admission:
            await admission_phase(args, lumen_port)
        if args.streams:
            await streams_phase(args, lumen, lumen_port)
        if args.rate:
            await rate_phase(args, lumen, lumen_port)
        rss, fds, cpu = proc(lumen.pid)
        print(f"- Lumen at the end: RSS {rss / 1024:.1f} MB, {fds} descriptors, {cpu:.2f} CPU s in total")
    finally:
        for p in [lumen, *sims]:
            p.terminate()
        for p in [lumen, *sims]:
            p.wait()


if __name__ == "__main__":
    asyncio.run(main())
