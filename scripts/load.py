#!/usr/bin/env python3
"""Load and fault scenarios against a real `tessera serve` on 127.0.0.1.

Standard library only (asyncio streams speak HTTP/1.1 themselves), bounded in
time and request count, loopback only. Each scenario starts its own server on a
free port, drives it, checks what must hold, prints figures and exits non-zero
when a check fails. Not part of CI: run by hand, e.g.

    cargo build --release -p tessera-cli
    scripts/load.py soak --clients 64 --seconds 300
    scripts/load.py overload
    scripts/load.py disconnect
    scripts/load.py sigterm
    scripts/load.py memory
    scripts/load.py two-models
    scripts/load.py behind-big
    scripts/load.py all            # every check scenario (not the two measurements) with short durations

Scenarios:
  soak        N concurrent clients for T seconds on the tiny model: zero errors,
              server RSS sampled and required flat after warm-up.
  overload    a small queue (--max-queue-tokens) flooded: fast 429s with
              Retry-After, then full recovery (queue back to 0, requests served).
  disconnect  clients that send big requests and hang up at once: the queue
              drains, dropped work is counted, the server keeps answering.
  sigterm     SIGTERM in the middle of load: requests in flight are answered,
              new connections refused, exit status 0.
  memory      a 10,000-document request and a stream of maximum-length
              documents: peak RSS stays within the bound the token limits imply.
  two-models  the reranker and the tiny embedding fixture in one server:
              mixed rerank and embedding traffic answered correctly (or 429),
              then an embedding flood that fills the shared queue refuses
              rerank requests too, both drain to 0 and serve again, RSS flat.
  throughput  --clients clients × --requests requests of --docs documents on
              the model and backend of --serve-args: served billed tokens/s
              beside the engine's own rate (scripts/gpu-check.sh runs it).
  behind-big  a 2-document request sent during a 2,000-document one: its
              latency as a share of the big one's (docs/benchmarks.md), the
              big one's scores checked against the same request alone.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.path.join(ROOT, "target", "release", "tessera")

WORDS = (
    "password reset login account security email billing invoice refund shipping "
    "order delivery warranty battery screen keyboard network router printer update "
    "install license server database backup restore cluster latency throughput"
).split()


def text(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Server:
    """A `tessera serve` child process on a free loopback port."""

    def __init__(self, binary, extra=()):
        self.port = free_port()
        args = [binary, "serve", "--host", "127.0.0.1", "--port", str(self.port), *extra]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self.pid = self.proc.pid

    async def ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited early: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                status, _, _ = await request(self.port, "GET", "/health", None, timeout=2)
                if status == 200:
                    return
            except (OSError, asyncio.TimeoutError, ConnectionError):
                pass
            await asyncio.sleep(0.1)
        raise SystemExit("server not ready in time")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


async def request(port, method, path, body, timeout=120, hang_up=False):
    """One HTTP/1.1 request on a fresh connection: (status, headers, body bytes)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
        if hang_up:
            return None, {}, b""
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    head, _, data = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or len(lines[0].split()) < 2:
        raise ConnectionError(f"no HTTP response: {raw[:100]!r}")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        data = dechunk(data)
    return status, headers, data


def dechunk(data):
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


async def metrics(port):
    _, _, body = await request(port, "GET", "/metrics", None)
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def check(ok, what, failures):
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        failures.append(what)


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def soak(args):
    # A small prefix cache: every request has a new query, so the cache fills to
    # its bound within seconds and RSS must then stay flat.
    print(f"soak: {args.clients} clients for {args.seconds}s, --prefix-cache-bytes 16MiB")
    server = Server(args.binary, ["--prefix-cache-bytes", "16MiB"])
    await server.ready()
    failures = []
    stop_at = time.monotonic() + args.seconds
    counts = {"ok": 0, "error": 0}
    errors = []
    latencies = []
    rss = []

    async def client(seed):
        rng = random.Random(seed)
        while time.monotonic() < stop_at and counts["ok"] + counts["error"] < args.max_requests:
            docs = [text(rng, rng.randint(3, 60)) for _ in range(rng.randint(1, 16))]
            route = rng.choice(["/v1/rerank", "/v2/rerank", "/rerank"])
            body = (
                {"query": text(rng, 6), "texts": docs}
                if route == "/rerank"
                else {"query": text(rng, 6), "documents": docs, "top_n": rng.randint(1, 16)}
            )
            start = time.monotonic()
            try:
                status, _, data = await request(server.port, "POST", route, body)
                parsed = json.loads(data)
                results = parsed if route == "/rerank" else parsed["results"]
                good = status == 200 and len(results) == (
                    len(docs) if route == "/rerank" else min(len(docs), body["top_n"])
                )
            except Exception as e:  # noqa: BLE001 - every failure is counted
                good, status = False, repr(e)
            latencies.append(time.monotonic() - start)
            if good:
                counts["ok"] += 1
            else:
                counts["error"] += 1
                errors.append(status)

    async def sampler():
        while time.monotonic() < stop_at:
            rss.append((time.monotonic(), rss_mib(server.pid)))
            await asyncio.sleep(max(1.0, args.seconds / 60))

    started = time.monotonic()
    await asyncio.gather(sampler(), *(client(i) for i in range(args.clients)))
    elapsed = time.monotonic() - started
    code = server.stop()
    total = counts["ok"] + counts["error"]
    print(
        f"  {total} requests in {elapsed:.0f}s ({total / elapsed:.0f}/s), {counts['error']} errors; "
        f"latency p50 {percentile(latencies, 50) * 1e3:.0f} ms, p99 {percentile(latencies, 99) * 1e3:.0f} ms"
    )
    warm = [m for _, m in rss[len(rss) // 5 :]] or [m for _, m in rss]
    print(
        f"  RSS MiB: start {rss[0][1]:.0f}, after warm-up min {min(warm):.0f} max {max(warm):.0f}, "
        f"end {rss[-1][1]:.0f} ({len(rss)} samples)"
    )
    check(counts["error"] == 0, f"zero errors (first: {errors[:3]})", failures)
    check(max(warm) - min(warm) <= max(16.0, 0.1 * min(warm)), "RSS flat after warm-up (≤ 10% or 16 MiB)", failures)
    check(code == 0, f"clean exit on SIGTERM (status {code})", failures)
    return failures


async def overload(args):
    queue = 8192
    print(f"overload: --max-queue-tokens {queue}, {args.clients} clients flooding for {args.seconds}s")
    server = Server(args.binary, ["--max-queue-tokens", str(queue), "--max-batch-tokens", "2048"])
    await server.ready()
    failures = []
    rng = random.Random(1)
    stop_at = time.monotonic() + args.seconds
    outcome = {"200": 0, "429": 0, "other": []}
    refusals = []
    retry_after_ok = True

    async def flood():
        nonlocal retry_after_ok
        while time.monotonic() < stop_at:
            body = {"query": text(rng, 8), "documents": [text(rng, 120) for _ in range(12)]}
            start = time.monotonic()
            try:
                status, headers, _ = await request(server.port, "POST", "/v1/rerank", body)
            except Exception as e:  # noqa: BLE001
                outcome["other"].append(repr(e))
                continue
            if status == 200:
                outcome["200"] += 1
            elif status == 429:
                outcome["429"] += 1
                refusals.append(time.monotonic() - start)
                retry_after_ok &= headers.get("retry-after", "").isdigit()
            else:
                outcome["other"].append(status)

    await asyncio.gather(*(flood() for _ in range(args.clients)))
    print(
        f"  served {outcome['200']}, refused {outcome['429']} (429 latency p50 "
        f"{percentile(refusals, 50) * 1e3:.1f} ms, p99 {percentile(refusals, 99) * 1e3:.1f} ms), other {outcome['other'][:3]}"
    )
    check(outcome["429"] > 0, "the flood was refused with 429", failures)
    check(retry_after_ok, "every 429 carries a numeric Retry-After", failures)
    check(percentile(refusals, 99) < 0.25, "429s are fast (p99 < 250 ms)", failures)
    check(not outcome["other"], "no other status or connection error", failures)
    for _ in range(100):
        m = await metrics(server.port)
        if m.get("tessera_queue_tokens", 1) == 0:
            break
        await asyncio.sleep(0.1)
    check(m.get("tessera_queue_tokens") == 0, "the queue drains to 0 tokens", failures)
    status, _, _ = await request(server.port, "POST", "/v1/rerank", {"query": "q", "documents": ["a", "b"]})
    check(status == 200, "a request after the flood is served", failures)
    check(server.stop() == 0, "clean exit", failures)
    return failures


async def disconnect(args):
    print(f"disconnect: {args.requests} clients send big requests and hang up")
    server = Server(args.binary, ["--max-batch-tokens", "2048"])
    await server.ready()
    failures = []
    rng = random.Random(2)
    before = await metrics(server.port)
    bodies = [
        {"query": text(rng, 8), "documents": [text(rng, 200) for _ in range(40)]}
        for _ in range(args.requests)
    ]
    await asyncio.gather(
        *(request(server.port, "POST", "/v1/rerank", b, hang_up=True) for b in bodies),
        return_exceptions=True,
    )
    for _ in range(600):
        m = await metrics(server.port)
        if m.get("tessera_queue_tokens", 1) == 0 and m.get("tessera_queue_requests", 1) == 0:
            break
        await asyncio.sleep(0.1)
    def delta(name):
        return m.get(name, 0) - before.get(name, 0)

    closed = delta('tessera_requests_total{route="/v1/rerank",status="499"}')
    dropped = delta("tessera_dropped_requests_total")
    computed = delta("tessera_documents_scored_total")
    never = delta("tessera_dropped_documents_total")
    print(
        f"  hang-ups counted as 499: {closed:.0f}; dropped from the queue {dropped:.0f} "
        f"({never:.0f} documents never computed); documents computed {computed:.0f} of {40 * args.requests}"
    )
    check(m.get("tessera_queue_tokens") == 0, "the queue drains to 0 tokens", failures)
    check(closed == args.requests, "every hang-up is counted (status 499)", failures)
    check(computed < 40 * args.requests / 2, "most abandoned work is never computed", failures)
    status, _, _ = await request(server.port, "POST", "/v1/rerank", {"query": "q", "documents": ["a"]})
    check(status == 200, "the server keeps answering", failures)
    check(server.stop() == 0, "clean exit", failures)
    return failures


async def sigterm(args):
    print(f"sigterm: {args.clients} clients, SIGTERM after 2 s")
    server = Server(args.binary, ["--max-batch-tokens", "4096"])
    await server.ready()
    failures = []
    rng = random.Random(3)
    results = {"200": 0, "503": 0, "refused": 0, "broken": []}
    stopping = asyncio.Event()

    async def client():
        while not stopping.is_set() or rng.random() < 0.5:
            body = {"query": text(rng, 8), "documents": [text(rng, 150) for _ in range(8)]}
            try:
                status, _, _ = await request(server.port, "POST", "/v1/rerank", body)
            except (ConnectionRefusedError, ConnectionResetError):
                if stopping.is_set():
                    results["refused"] += 1
                    return
                results["broken"].append("refused before SIGTERM")
                continue
            except Exception as e:  # noqa: BLE001
                results["broken"].append(repr(e))
                return
            if status == 200:
                results["200"] += 1
            elif status == 503 and stopping.is_set():
                results["503"] += 1
            else:
                results["broken"].append(status)
            if stopping.is_set():
                return

    async def trigger():
        await asyncio.sleep(2)
        stopping.set()
        server.proc.send_signal(signal.SIGTERM)

    tasks = [asyncio.create_task(client()) for _ in range(args.clients)]
    await trigger()
    await asyncio.gather(*tasks)
    code = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait)
    print(
        f"  answered 200: {results['200']}, 503 while stopping: {results['503']}, "
        f"refused after stop: {results['refused']}, broken: {results['broken'][:3]}"
    )
    check(not results["broken"], "no request in flight lost (no reset, no 5xx but 503 after SIGTERM)", failures)
    check(code == 0, f"exit status 0 (got {code})", failures)
    return failures


async def memory(args):
    # The queue holds the 10,000 pairs (about 80 tokens each) and little more.
    batch, queue = 16384, 1 << 20
    print(f"memory: --max-batch-tokens {batch} --max-queue-tokens {queue}")
    server = Server(args.binary, ["--max-batch-tokens", str(batch), "--max-queue-tokens", str(queue)])
    await server.ready()
    failures = []
    idle = rss_mib(server.pid)
    peak = idle
    stop = False

    async def sample():
        nonlocal peak
        while not stop:
            peak = max(peak, rss_mib(server.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    rng = random.Random(4)
    docs = [text(rng, rng.randint(1, 12)) for _ in range(10_000)]
    start = time.monotonic()
    status, _, data = await request(server.port, "POST", "/v1/rerank", {"query": "q", "documents": docs, "top_n": 3})
    ten_k = time.monotonic() - start
    check(status == 200, f"10,000 documents answered ({status}) in {ten_k:.1f}s", failures)
    peak_10k = peak
    long_doc = " ".join(rng.choice(WORDS) for _ in range(12000))
    statuses = []
    for _ in range(args.requests):
        s, _, _ = await request(server.port, "POST", "/v1/rerank", {"query": "q", "documents": [long_doc] * 4})
        statuses.append(s)
    stop = True
    await sampler
    print(f"  RSS MiB: idle {idle:.0f}, peak with 10,000 documents {peak_10k:.0f}, peak overall {peak:.0f}")
    check(all(s == 200 for s in statuses), f"{len(statuses)} requests of 4 maximum-length documents answered", failures)
    # Tokens held: the queue (ids, 4 bytes each) plus one batch's activations.
    check(peak - idle < 1024, "peak growth under 1 GiB for these limits on the tiny model", failures)
    check(server.stop() == 0, "clean exit", failures)
    return failures


async def throughput(args):
    """Served throughput: --clients clients each send --requests requests of
    --docs documents of about --doc-words words (a new query each), against the
    model and backend given with --serve-args; billed tokens/s over the wall
    time beside the engine's own rate (its tessera_tokens_per_second gauge)."""
    extra = args.serve_args.split() if args.serve_args else []
    print(f"throughput: {args.clients} clients × {args.requests} requests × {args.docs} docs, serve {' '.join(extra)}")
    server = Server(args.binary, extra)
    await server.ready(timeout=600)
    failures = []
    billed = [0]
    latencies = []
    errors = []

    async def client(seed):
        rng = random.Random(seed)
        for _ in range(args.requests):
            body = {
                "query": text(rng, 12),
                "documents": [text(rng, args.doc_words) for _ in range(args.docs)],
            }
            start = time.monotonic()
            try:
                status, _, data = await request(server.port, "POST", "/v1/rerank", body, timeout=600)
                parsed = json.loads(data)
                if status != 200:
                    errors.append(status)
                    continue
                billed[0] += parsed["meta"]["billed_units"]["total_tokens"]
            except Exception as e:  # noqa: BLE001 - every failure is counted
                errors.append(repr(e))
                continue
            latencies.append(time.monotonic() - start)

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    elapsed = time.monotonic() - started
    try:
        gauge = (await metrics(server.port)).get("tessera_tokens_per_second")
    except Exception:  # noqa: BLE001 - the figure is optional
        gauge = None
    code = server.stop()
    print(
        f"  served {billed[0]:,} billed tokens in {elapsed:.2f} s = {billed[0] / elapsed:,.0f} billed tokens/s; "
        f"latency p50 {percentile(latencies, 50):.2f} s, p99 {percentile(latencies, 99):.2f} s; "
        f"engine's recent rate {gauge if gauge is None else f'{gauge:,.0f}'} tokens/s; {len(errors)} errors"
    )
    check(not errors, f"zero errors (first: {errors[:3]})", failures)
    check(code == 0, f"clean exit on SIGTERM (status {code})", failures)
    return failures


async def behind_big(args):
    """A small request sent while a big one is being computed: its latency as a
    share of the big one's (fair scheduling keeps it near one forward pass, not
    the rest of the big request). --docs documents (default here 2,000) of
    --doc-words words in the big request, 2 in the small one; three rounds,
    with --serve-args (default: the embedded model on the CPU). The big
    request's scores are checked against the same request sent alone."""
    extra = args.serve_args.split() if args.serve_args else []
    docs = args.docs if args.docs != 100 else 2000
    print(f"behind-big: {docs} docs x {args.doc_words} words, then 2 docs; serve {' '.join(extra)}")
    server = Server(args.binary, extra)
    await server.ready(timeout=600)
    failures = []
    rng = random.Random(7)
    big = {"query": text(rng, 12), "documents": [text(rng, args.doc_words) for _ in range(docs)]}
    small = {"query": text(rng, 12), "documents": [text(rng, args.doc_words) for _ in range(2)]}

    async def timed(body, delay=0.0):
        await asyncio.sleep(delay)
        start = time.monotonic()
        status, _, data = await request(server.port, "POST", "/v1/rerank", body, timeout=600)
        return status, json.loads(data), time.monotonic() - start

    _, alone_small, small_alone_s = await timed(small)
    _, alone_big, big_alone_s = await timed(big)
    print(f"  alone: big {big_alone_s:.2f} s, small {small_alone_s * 1e3:.0f} ms")
    async def passes():
        values = await metrics(server.port)
        return sum(v for k, v in values.items() if k.startswith("tessera_model_batches"))

    async def behind(body):
        # Sent once the big request's first pass is done: it is then in the
        # middle of its compute, not still being tokenised (on a busy machine
        # a fixed delay can let the small request in first).
        before = await passes()
        deadline = time.monotonic() + 60
        while await passes() < before + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await timed(body)

    shares = []
    for round_ in range(3):
        (bs, bbody, big_s), (ss, _, small_s) = await asyncio.gather(timed(big), behind(small))
        check(bs == 200 and ss == 200, f"round {round_ + 1}: both answered 200", failures)
        shares.append(small_s / big_s)
        print(f"  round {round_ + 1}: big {big_s:.2f} s, small behind it {small_s:.3f} s = {100 * small_s / big_s:.1f} % of the big one")
        same = sorted((r["index"], r["relevance_score"]) for r in bbody["results"]) == sorted(
            (r["index"], r["relevance_score"]) for r in alone_big["results"])
        check(same, f"round {round_ + 1}: the big request's scores equal its scores alone", failures)
    print(f"  median share {100 * statistics.median(shares):.1f} %")
    check(server.stop() == 0, "clean exit", failures)
    return failures


async def two_models(args):
    model = os.path.join(ROOT, "tests", "fixtures", "tiny-embed-q8.gguf")
    if not os.path.exists(model):
        # The model fixtures are rebuilt, not committed (crates/fixtures).
        subprocess.run(["cargo", "run", "--quiet", "-p", "tessera-fixtures"], cwd=ROOT, check=True)
    queue = 8192
    print(f"two-models: reranker + {os.path.basename(model)}, --max-queue-tokens {queue}")
    server = Server(
        args.binary,
        [
            "--embedding-model", model, "--max-queue-tokens", str(queue), "--max-batch-tokens", "2048",
            # Every rerank query is new: a small cache reaches its bound quickly.
            "--prefix-cache-bytes", "16MiB",
        ],
    )
    await server.ready()
    failures = []
    task = "Given a web search query, retrieve relevant passages that answer the query"
    outcome = {"200": 0, "429": 0, "wrong": [], "other": []}
    rss = []

    async def one(rng, route, big=False):
        if route == "/v1/rerank":
            docs = [text(rng, 120 if big else rng.randint(3, 40)) for _ in range(12 if big else rng.randint(1, 8))]
            body = {"query": text(rng, 6), "documents": docs}
        else:
            inputs = [text(rng, 120 if big else rng.randint(1, 40)) for _ in range(16 if big else rng.randint(1, 8))]
            body = {"input": inputs, "dimensions": rng.choice([8, 16, 32])}
            if rng.random() < 0.5:
                body["instruction"] = task
        status, headers, data = await request(server.port, "POST", route, body)
        if status == 429:
            if not headers.get("retry-after", "").isdigit():
                outcome["wrong"].append("429 without Retry-After")
            return 429
        if status != 200:
            outcome["other"].append((route, status, data[:200]))
            return status
        parsed = json.loads(data)
        if route == "/v1/rerank":
            ok = len(parsed["results"]) == len(body["documents"])
        else:
            vectors = [d["embedding"] for d in parsed["data"]]
            ok = [d["index"] for d in parsed["data"]] == list(range(len(body["input"]))) and all(
                len(v) == body["dimensions"] and abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors
            )
        if not ok:
            outcome["wrong"].append(route)
        return 200

    # Mixed traffic from a few clients.
    stop_at = time.monotonic() + args.seconds / 2

    async def mixed(seed):
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            status = await one(rng, rng.choice(["/v1/rerank", "/v1/embeddings"]))
            outcome[str(status)] = outcome.get(str(status), 0) + 1

    async def sampler(until):
        while time.monotonic() < until:
            rss.append(rss_mib(server.pid))
            await asyncio.sleep(0.5)

    await asyncio.gather(sampler(stop_at), *(mixed(i) for i in range(min(args.clients, 8))))
    print(f"  mixed: {outcome['200']} served, {outcome['429']} refused, wrong {outcome['wrong'][:3]}, other {outcome['other'][:3]}")
    check(outcome["200"] > 0 and not outcome["wrong"] and not outcome["other"], "mixed traffic answered correctly", failures)

    # An embedding flood; rerank probes meanwhile.
    flood_until = time.monotonic() + args.seconds / 2
    probes = {"200": 0, "429": 0}

    async def flood(seed):
        rng = random.Random(1000 + seed)
        while time.monotonic() < flood_until:
            await one(rng, "/v1/embeddings", big=True)

    async def probe():
        rng = random.Random(7)
        while time.monotonic() < flood_until:
            status = await one(rng, "/v1/rerank", big=True)
            probes[str(status)] = probes.get(str(status), 0) + 1
            await asyncio.sleep(0.05)

    mixed_rss = list(rss)
    rss.clear()
    await asyncio.gather(sampler(flood_until), probe(), *(flood(i) for i in range(args.clients)))
    print(f"  flood: rerank probes {probes}, other {outcome['other'][:3]}")
    check(probes.get("429", 0) > 0, "an embedding backlog refuses rerank requests too (one queue budget)", failures)
    check(not outcome["other"] and not outcome["wrong"], "only 200 or 429 with Retry-After", failures)
    for _ in range(200):
        m = await metrics(server.port)
        if m.get("tessera_queue_tokens", 1) == 0:
            break
        await asyncio.sleep(0.1)
    check(m.get("tessera_queue_tokens") == 0, "the shared queue drains to 0 tokens", failures)
    rng = random.Random(3)
    check(await one(rng, "/v1/rerank") == 200, "rerank served after the flood", failures)
    check(await one(rng, "/v1/embeddings") == 200, "embeddings served after the flood", failures)
    # Flat within the flood once warm (its batches and queue at their bounds).
    warm = rss[len(rss) // 3 :] or rss
    print(
        f"  RSS MiB: mixed {min(mixed_rss):.0f}..{max(mixed_rss):.0f}; flood after warm-up "
        f"{min(warm):.0f}..{max(warm):.0f}"
    )
    check(max(warm) - min(warm) <= max(16.0, 0.1 * min(warm)), "RSS flat during the flood (≤ 10% or 16 MiB)", failures)
    check(server.stop() == 0, "clean exit", failures)
    return failures


SCENARIOS = {
    "soak": soak,
    "overload": overload,
    "disconnect": disconnect,
    "sigterm": sigterm,
    "memory": memory,
    "two-models": two_models,
    "throughput": throughput,
    "behind-big": behind_big,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--binary", default=DEFAULT_BINARY)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="stop a soak after this many")
    parser.add_argument("--docs", type=int, default=100, help="throughput: documents per request")
    parser.add_argument("--doc-words", type=int, default=180, help="throughput: words per document")
    parser.add_argument("--serve-args", default="", help="throughput: extra `tessera serve` arguments")
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} not found: cargo build --release -p tessera-cli")
    measurements = ("throughput", "behind-big")
    names = [n for n in SCENARIOS if n not in measurements] if args.scenario == "all" else [args.scenario]
    failures = []
    for name in names:
        failures += [f"{name}: {f}" for f in asyncio.run(SCENARIOS[name](args))]
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
