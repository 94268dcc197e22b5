#!/usr/bin/env bash
# Starts one `tessera serve` on a free port hosting the reranker and a random
# embedding model (generated here), runs against it the real cohere SDK and httpx
# (sdk_check.py), the real OpenAI SDK (openai_check.py) and the product page's
# two-stage snippet (two_stage_snippet.py), all installed into one venv, then stops
# the server with SIGTERM and requires a clean exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${TESSERA_SDK_VENV:-/tmp/tessera-sdk-venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check cohere httpx openai

cargo build --quiet -p tessera-cli
bin=target/debug/tessera
key=sdk-check-key
log=$(mktemp -d)
# 4B-shaped, one layer: 2,560 wide, so `dimensions=1536` is a real cut (~500 MB).
embedding_model=$log/embedding.gguf
if ! "$bin" generate --shape 4b --layers 1 --kind embedding --out "$embedding_model" \
    >"$log/generate" 2>&1; then
    echo "tessera generate failed:"; cat "$log/generate"; rm -f "$embedding_model"; exit 1
fi
"$bin" serve --port 0 --api-key "$key" --served-model-name Qwen/Qwen3-Reranker-4B \
    --embedding-model "$embedding_model" \
    --embedding-served-model-name Qwen/Qwen3-Embedding-8B \
    >"$log/stdout" 2>"$log/stderr" &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null || true
    rm -f "$embedding_model"
}
trap stop EXIT

url=""
for _ in $(seq 1 300); do
    url=$(grep -o 'http://[0-9.:]*' "$log/stdout" || true)
    if [ -n "$url" ] && curl -sf "$url/health" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "tessera serve exited early:"; cat "$log/stderr"; exit 1
    fi
    sleep 0.1
done
if [ -z "$url" ] || ! curl -sf "$url/health" >/dev/null; then
    echo "tessera serve did not become healthy:"; cat "$log/stderr"; exit 1
fi

for check in sdk_check openai_check two_stage_snippet; do
    TESSERA_URL=$url TESSERA_API_KEY=$key "$venv/bin/python" "tests/python/$check.py"
done

trap - EXIT
kill -TERM "$server"
if ! wait "$server"; then
    echo "tessera serve did not exit cleanly on SIGTERM:"; tail -20 "$log/stderr"; rm -f "$embedding_model"; exit 1
fi
rm -f "$embedding_model"
echo "tessera serve stopped cleanly"
