#!/usr/bin/env bash
# One command for a lent GPU machine, in two halves (the GPU machines have CUDA,
# PyTorch and transformers but no Rust toolchain and no network):
#
#   here:  scripts/gpu-check.sh build [DIR]   # default DIR: target/gpu-carry
#          builds the release binary and the CUDA test binaries with
#          `--features cuda` into DIR (stripped; must stay under 64 MiB with the
#          working tree), to be carried to the GPU machine.
#   there: scripts/gpu-check.sh run [DIR]     # results under $OUT (or target/gpu-results)
#          runs the op parity suite on the GPU (NMSE per op, kernels compiled by
#          that machine's own NVRTC), the model parity on the fixtures (W8A8
#          reference; W8A16 against W8A32), the matmul benchmarks in both
#          arithmetics beside cuBLAS (scripts/find-cublas.sh puts libcublas on the
#          library path), attention, the end-to-end benchmark in both arithmetics,
#          and the PyTorch bf16 baseline; the summary is printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
DIR=${2:-target/gpu-carry}

build() {
    rm -rf "$DIR"
    mkdir -p "$DIR"
    # Test binaries: cargo prints each executable it builds as JSON.
    cargo test --release --no-run -p tessera-backend-cuda --features cuda --message-format=json \
        | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
        cp "$exe" "$DIR/$name"
        strip "$DIR/$name" || true
    done
    # The release binary, once the cli offers the backend behind its `cuda` feature.
    if cargo build --release -p tessera-cli --features cuda 2>"$DIR/cli-build.log"; then
        cp target/release/tessera "$DIR/tessera" && strip "$DIR/tessera" || true
    else
        echo "gpu-check: the tessera binary has no 'cuda' feature yet (see $DIR/cli-build.log); carrying the test binaries only"
    fi
    # Compiled-in fixture path of the test binaries (tests/src/lib.rs uses the
    # build machine's manifest dir); `run` links the carried tree's fixtures there.
    echo "$PWD/tests/fixtures" >"$DIR/fixtures-path"
    cp scripts/torch_baseline.py "$DIR/"
    du -sh "$DIR"
    local bytes
    bytes=$(du -sb "$DIR" | cut -f1)
    if ((bytes > 40 * 1024 * 1024)); then
        echo "gpu-check: $DIR is $((bytes >> 20)) MiB; with the working tree the carry limit is 64 MiB" >&2
        exit 1
    fi
}

run() {
    local out=${OUT:-target/gpu-results}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt" || true
    # The kernels are compiled at run time by this machine's NVRTC.
    if ! ldconfig -p | grep -q libnvrtc.so; then
        for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
            [[ -d $dir ]] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        done
    fi
    local fixtures
    fixtures=$(cat "$DIR/fixtures-path")
    if [[ ! -e $fixtures ]]; then
        mkdir -p "$(dirname "$fixtures")"
        ln -s "$PWD/tests/fixtures" "$fixtures"
    fi
    # cuBLAS for the benchmark's anchors (CUDA toolkit or PyTorch's wheels).
    local cublas
    cublas=$(bash scripts/find-cublas.sh || true)
    [[ -n $cublas ]] && export LD_LIBRARY_PATH="$cublas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export TESSERA_KERNEL_CACHE="$out/kernel-cache"
    local status=0
    "$DIR/gpu" --nocapture --test-threads 1 2>&1 | tee "$out/parity.txt" || status=1
    TESSERA_GPU_BENCH=1 "$DIR/gpu_bench" --nocapture --test-threads 1 2>&1 | tee "$out/bench.txt" || status=1
    if [[ -x "$DIR/tessera" ]] && "$DIR/tessera" bench --help >/dev/null 2>&1; then
        # A random Qwen3-4B-shaped Q8_0 model (≈ 4.3 GB, outside $OUT: too large
        # to come back), all 100 documents in one pass, transformers as the
        # baseline (below) instead of the CPU reference.
        local model=${TMPDIR:-/tmp}/tessera-qwen3-4b-random-q8.gguf
        "$DIR/tessera" generate --shape 4b --out "$model" 2>&1 | tail -1 | tee "$out/end-to-end.txt"
        for precision in w8a8 w8a16; do
            echo "-- --gpu-precision $precision" | tee -a "$out/end-to-end.txt"
            "$DIR/tessera" bench --backend cuda --gpu-precision "$precision" --model "$model" --docs 100 \
                --doc-tokens 256 --query-tokens 32 --batch-tokens 32768 --baseline-docs 0 --runs 5 --profile 2>&1 \
                | tee -a "$out/end-to-end.txt" || status=1
        done
    else
        echo "end to end: no tessera binary with a cuda bench in $DIR" | tee "$out/end-to-end.txt"
    fi
    python3 "$DIR/torch_baseline.py" --docs 100 --doc-tokens 256 --query-tokens 32 2>&1 \
        | tee "$out/torch-baseline.txt" || echo "torch baseline failed" >>"$out/torch-baseline.txt"

    {
        echo "==================== gpu-check summary ===================="
        cat "$out/device.txt" 2>/dev/null || true
        echo "-- op parity (NMSE per case; FAILED lines if any)"
        grep -E "^(rms_norm|matmul|rope|attention|swiglu|add|embedding|score_head|norm_matmuls|qk_norm_rope|matmul_add|swiglu_mm_add) " "$out/parity.txt" \
            | awk '{print $1, $2, $4}' | column -t || true
        grep -E "FAILED|panicked" "$out/parity.txt" || echo "no failures"
        echo "-- model parity"
        grep -E "pairs, \|score" "$out/parity.txt" || true
        echo "-- benchmarks"
        grep -E "^(matmul|attention|layer_ops|device|  cuBLAS)|anchors|skipped" "$out/bench.txt" || true
        grep -vE "^profile    (L[0-9]|op )" "$out/end-to-end.txt"
        grep -E "tokens/s|ms" "$out/torch-baseline.txt" || true
        # tessera's median billed tokens/s over transformers' (same 100 × 288 pairs).
        python3 - "$out/end-to-end.txt" "$out/torch-baseline.txt" <<'PY' || true
import re, sys
text = open(sys.argv[1]).read()
torch = re.findall(r"([\d,]+) billed tokens/s", open(sys.argv[2]).read())
for part in text.split("-- --gpu-precision ")[1:]:
    precision = part.split()[0]
    ours = re.findall(r"median\s+[\d.]+ s\s+([\d.]+) tokens/s", part)
    if ours and torch:
        a, b = float(ours[-1]), float(torch[-1].replace(",", ""))
        print(f"end to end ({precision}): tessera {a:,.0f} vs transformers bf16 {b:,.0f} billed tokens/s = {a / b:.2f}x")
PY
    } | tee "$out/summary.txt"
    return $status
}

case $mode in
    build) build ;;
    run) run ;;
    *)
        echo "usage: $0 build|run [DIR]" >&2
        exit 2
        ;;
esac
