#!/usr/bin/env bash
# Starts `tessera serve` on a free port, runs sdk_check.py against it with the real
# cohere SDK and httpx (installed into a fresh venv), then stops the server with
# SIGTERM and requires a clean exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${TESSERA_SDK_VENV:-/tmp/tessera-sdk-venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check cohere httpx

cargo build --quiet -p tessera-cli
bin=target/debug/tessera
key=sdk-check-key
log=$(mktemp -d)
"$bin" serve --port 0 --api-key "$key" --served-model-name Qwen/Qwen3-Reranker-4B \
    >"$log/stdout" 2>"$log/stderr" &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null || true
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

TESSERA_URL=$url TESSERA_API_KEY=$key "$venv/bin/python" tests/python/sdk_check.py

trap - EXIT
kill -TERM "$server"
if ! wait "$server"; then
    echo "tessera serve did not exit cleanly on SIGTERM:"; tail -20 "$log/stderr"; exit 1
fi
echo "tessera serve stopped cleanly"
