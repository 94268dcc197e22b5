#!/usr/bin/env bash
# Side-by-side CPU benchmark: tessera's fast path against llama.cpp on the same
# Qwen3-0.6B-shaped random Q8_0 reranker GGUF, with the same thread count.
#
#   1. prefill: `llama-bench -p 512 -n 0` against `tessera bench --sequence-tokens 512`
#   2. rerank:  `llama-server --reranking` against `tessera serve`, server to
#               server: the same POST /v1/rerank body (100 documents of about 256
#               tokens sharing one query) from the same client
#
# llama.cpp is built from the llama-cpp-python sdist on PyPI (it vendors
# llama.cpp under vendor/llama.cpp) in a scratch folder; nothing is vendored or
# committed. Environment: THREADS (default: all cores), WORK (scratch folder,
# default /tmp/tessera-vs-llamacpp), LLAMA_CPP_PYTHON_VERSION (default 0.3.36),
# TESSERA_BIN (a prebuilt tessera binary instead of `cargo build --release`),
# PORT (llama-server, default 18080), DOCS (rerank documents, default 100),
# RUNS (timed rerank requests, default 2), WARMUP (1: one untimed request first).
# Needs python3, pip, a C++ compiler, curl.
set -euo pipefail

THREADS=${THREADS:-$(nproc)}
WORK=${WORK:-/tmp/tessera-vs-llamacpp}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PORT=${PORT:-18080}
DOCS=${DOCS:-100}
RUNS=${RUNS:-2}
WARMUP=${WARMUP:-1}
DOC_TOKENS=256
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"

say() { printf '\n== %s\n' "$*"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# --- llama.cpp -----------------------------------------------------------------
LLAMA_BIN="$WORK/build/bin"
if [[ ! -x "$LLAMA_BIN/llama-bench" || ! -x "$LLAMA_BIN/llama-server" ]]; then
    say "building llama.cpp (llama-cpp-python $VERSION sdist) in $WORK"
    command -v cmake >/dev/null || python3 -m pip install --quiet cmake
    (cd "$WORK" && python3 -m pip download --quiet --no-deps \
        --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d .)
    tar -xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
    cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >"$WORK/configure.log"
    cmake --build "$WORK/build" -j"$THREADS" --target llama-bench llama-server \
        >"$WORK/build.log"
fi
LLAMA_COMMIT=$(cd "$WORK"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null &&
    git rev-parse --short HEAD 2>/dev/null || echo unknown)

# --- tessera and the model -----------------------------------------------------
if [[ -z "${TESSERA_BIN:-}" ]]; then
    say "building tessera (release)"
    (cd "$ROOT" && cargo build --release --quiet -p tessera-cli)
    TESSERA_BIN="$ROOT/target/release/tessera"
fi
MODEL="$WORK/qwen3-0.6b-rerank-random-q8_0.gguf"
if [[ ! -f "$MODEL" ]]; then
    say "generating $MODEL"
    "$TESSERA_BIN" generate --shape 0.6b --out "$MODEL" 2>/dev/null
fi

say "machine"
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "cpu: $CPU, $(nproc) cores online; threads used: $THREADS"
echo "llama.cpp: llama-cpp-python $VERSION (vendored llama.cpp $LLAMA_COMMIT), GGML_NATIVE=ON"
echo "load average before: $(load)"

# --- 1. prefill ------------------------------------------------------------------
say "prefill, 512-token sequences, $THREADS threads"
"$LLAMA_BIN/llama-bench" -m "$MODEL" -p 512 -n 0 -t "$THREADS" -r 3 -o csv \
    >"$WORK/llama-bench.csv" 2>"$WORK/llama-bench.err"
LLAMA_PP=$(python3 - "$WORK/llama-bench.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{float(rows[-1]['avg_ts']):.1f}")
PY
)
echo "llama.cpp  llama-bench pp512: $LLAMA_PP tokens/s"
"$TESSERA_BIN" bench --model "$MODEL" --sequence-tokens 512 --docs 1 --runs 3 \
    --threads "$THREADS" --baseline-docs 1 | tee "$WORK/tessera-prefill.txt"
OUR_PP=$(sed -n 's/^summary *fast \([0-9.]*\) tokens.*/\1/p' "$WORK/tessera-prefill.txt")
REF_PP=$(sed -n 's/.*| reference \([0-9.]*\) tokens.*/\1/p' "$WORK/tessera-prefill.txt")

# --- 2. rerank -------------------------------------------------------------------
say "rerank, $DOCS documents × ~$DOC_TOKENS tokens sharing one query, $THREADS threads"
"$LLAMA_BIN/llama-server" -m "$MODEL" --reranking -t "$THREADS" --port "$PORT" \
    -c 8192 -np 8 -b 2048 -ub 2048 >"$WORK/llama-server.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
# One client for both servers: the same request body, warm-up and timing.
cat >"$WORK/rerank_client.py" <<'PY'
import json, random, sys, time, urllib.request
port, docs, doc_tokens, runs, warm_up = map(int, sys.argv[1:6])
rng = random.Random(7)
words = ("time person year way day thing man world life hand part child eye woman place "
         "work week case point government company number group problem fact river mountain "
         "city music science history energy market system water light garden language").split()
query = " ".join(rng.choice(words) for _ in range(24))
documents = [" ".join(rng.choice(words) for _ in range(doc_tokens)) for _ in range(docs)]
body = json.dumps({"model": "m", "query": query, "documents": documents}).encode()
def once():
    req = urllib.request.Request(f"http://localhost:{port}/v1/rerank", body,
                                 {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=3600) as r:
        reply = json.load(r)
    return time.perf_counter() - start, reply
if warm_up:
    once()
times = []
for _ in range(runs):
    t, reply = once()
    times.append(t)
t = min(times)
usage = reply.get("usage", {})
tokens = usage.get("prompt_tokens") or usage.get("total_tokens")
print(f"{docs / t:.2f} {tokens / docs:.0f} {t:.2f}")
PY
wait_health() {
    for _ in $(seq 300); do
        curl -sf "localhost:$1/health" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "server on port $1 never became healthy" >&2
    return 1
}
wait_health "$PORT"
LLAMA_RERANK=$(python3 "$WORK/rerank_client.py" "$PORT" "$DOCS" "$DOC_TOKENS" "$RUNS" "$WARMUP")
kill "$SERVER_PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true
read -r LLAMA_DOCS LLAMA_PAIR_TOKENS LLAMA_SECONDS <<<"$LLAMA_RERANK"
echo "llama.cpp  llama-server /v1/rerank: $LLAMA_DOCS docs/s ($LLAMA_PAIR_TOKENS tokens per pair, best of $RUNS: $LLAMA_SECONDS s)"

OUR_PORT=$((PORT + 1))
"$TESSERA_BIN" serve --model "$MODEL" --backend cpu --threads "$THREADS" \
    --port "$OUR_PORT" >"$WORK/tessera-server.log" 2>&1 &
SERVER_PID=$!
wait_health "$OUR_PORT"
OUR_RERANK=$(python3 "$WORK/rerank_client.py" "$OUR_PORT" "$DOCS" "$DOC_TOKENS" "$RUNS" "$WARMUP")
kill "$SERVER_PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true
read -r OUR_DOCS OUR_PAIR_TOKENS OUR_SECONDS <<<"$OUR_RERANK"
echo "tessera    tessera serve /v1/rerank: $OUR_DOCS docs/s ($OUR_PAIR_TOKENS tokens per pair, best of $RUNS: $OUR_SECONDS s)"

say "results ($THREADS threads, $CPU; load average after: $(load))"
ratio() { python3 -c "print(f'{float($1) / float($2):.2f}')"; }
printf '%-34s %12s %12s %8s\n' "" "llama.cpp" "tessera" "ratio"
printf '%-34s %12s %12s %7s×\n' "prefill pp512 (tokens/s)" "$LLAMA_PP" "$OUR_PP" "$(ratio "$OUR_PP" "$LLAMA_PP")"
printf '%-34s %12s %12s %7s×\n' "rerank ${DOCS}×${DOC_TOKENS} (docs/s)" "$LLAMA_DOCS" "$OUR_DOCS" "$(ratio "$OUR_DOCS" "$LLAMA_DOCS")"
printf '%-34s %12s %12s %7s×\n' "tessera fast / reference (prefill)" "" "$REF_PP" "$(ratio "$OUR_PP" "$REF_PP")"
