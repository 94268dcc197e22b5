#!/usr/bin/env bash
# One command for a lent GPU machine, in two halves (the GPU machines have CUDA,
# PyTorch and transformers but no Rust toolchain and no network):
#
#   here:  scripts/gpu-check.sh build [DIR]   # default DIR: target/gpu-carry
#          builds the release binary (`--features cuda,wgpu`) and the CUDA and
#          wgpu test binaries into DIR (stripped and gzipped; under 40 MiB, the
#          carry limit being 64 MiB), with Debian's Vulkan loader packages, to be
#          carried to the GPU machine.
#   there: scripts/gpu-check.sh run [DIR]     # results under $OUT (or target/gpu-results)
#          runs the op parity suite on the GPU (NMSE per op, kernels compiled by
#          that machine's own NVRTC), the model parity on the fixtures (W8A8
#          reference; W8A16 against W8A32), the matmul benchmarks in both
#          arithmetics beside cuBLAS (scripts/find-cublas.sh puts libcublas on the
#          library path), attention, the end-to-end benchmark in both arithmetics,
#          the wgpu backend on the GPU's own Vulkan driver (carried loader
#          packages), and the PyTorch bf16 baseline; the summary is printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
DIR=${2:-target/gpu-carry}

build() {
    rm -rf "$DIR"
    mkdir -p "$DIR"
    # Test binaries: cargo prints each executable it builds as JSON. The wgpu
    # ones (parity, model_parity) run on the GPU's own Vulkan driver there.
    cargo test --release --no-run -p tessera-backend-cuda --features cuda -p tessera-backend-wgpu \
        --message-format=json \
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
    # The release binary with both GPU backends.
    if cargo build --release -p tessera-cli --features cuda,wgpu 2>"$DIR/cli-build.log"; then
        cp target/release/tessera "$DIR/tessera" && strip "$DIR/tessera" || true
    else
        echo "gpu-check: the tessera binary has no 'cuda' feature yet (see $DIR/cli-build.log); carrying the test binaries only"
    fi
    # The op kit's perf mode (benches/): every op of a 4B layer, ours against the CPU.
    # And embedding beside rerank on one model shape (benches/src/bin/embed.rs).
    if cargo build --release -p tessera-benches --features cuda --bin ops --bin embed 2>"$DIR/ops-build.log"; then
        for bin in ops embed; do
            cp "target/release/$bin" "$DIR/$bin" && strip "$DIR/$bin" || true
        done
    fi
    # Compiled-in fixture path of the test binaries (tests/src/lib.rs uses the
    # build machine's manifest dir); `run` links the carried tree's fixtures there.
    echo "$PWD/tests/fixtures" >"$DIR/fixtures-path"
    cp scripts/torch_baseline.py "$DIR/"
    # The lent machines have NVIDIA's Vulkan ICD but no Vulkan loader and none of
    # the GLVND libraries the ICD links: Debian's packages, unpacked there.
    mkdir -p "$DIR/gl" /tmp/tessera-apt/partial
    local apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/tessera-apt)
    if apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 &&
        (cd "$DIR/gl" && apt-get "${apt_opts[@]}" download -qq \
            libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1); then
        echo "gpu-check: Vulkan loader and GLVND packages in $DIR/gl"
    else
        echo "gpu-check: could not download the Vulkan loader packages; wgpu will be skipped there"
    fi
    # Compressed for the trip (about a third of the size); `run` unpacks them.
    for exe in "$DIR"/*; do
        [[ -f $exe && -x $exe && $exe != *.py ]] && gzip -9 "$exe"
    done
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
    for packed in "$DIR"/*.gz; do
        [[ -f $packed ]] || continue
        gunzip -c "$packed" >"${packed%.gz}"
        chmod +x "${packed%.gz}"
    done
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
    TESSERA_GPU_BENCH=1 TESSERA_BENCH_JSON="$out/kernels.jsonl" "$DIR/gpu_bench" --nocapture --test-threads 1 2>&1 \
        | tee "$out/bench.txt" || status=1
    # One layer's ops in both arithmetics at 512 and 4,096 token rows, the fast
    # CPU path as the baseline at 512 (the CPU is too slow to time at 4,096).
    if [[ -x "$DIR/ops" ]]; then
        for backend in cuda cuda-w8a16; do
            timeout 120 "$DIR/ops" --backend "$backend" --baseline cpu-fast --tokens 512 --seconds 0.3 2>&1
            timeout 60 "$DIR/ops" --backend "$backend" --baseline none --tokens 4096 --seconds 0.3 2>&1
        done | tee "$out/ops.txt" || status=1
    fi
    if [[ -x "$DIR/tessera" ]] && "$DIR/tessera" bench --help >/dev/null 2>&1; then
        # A random Qwen3-4B-shaped Q8_0 model (≈ 4.3 GB, outside $OUT: too large
        # to come back), all 100 documents in one pass, transformers as the
        # baseline (below) instead of the CPU reference.
        local model=${TMPDIR:-/tmp}/tessera-qwen3-4b-random-q8.gguf
        "$DIR/tessera" generate --shape 4b --out "$model" 2>&1 | tail -1 | tee "$out/end-to-end.txt"
        for precision in w8a8 w8a16; do
            echo "-- --gpu-precision $precision" | tee -a "$out/end-to-end.txt"
            "$DIR/tessera" bench --backend cuda --gpu-precision "$precision" --model "$model" --docs 100 \
                --doc-tokens 256 --query-tokens 32 --batch-tokens 32768 --baseline-docs 0 --runs 5 --profile \
                --format json 2>&1 >>"$out/end-to-end.jsonl" \
                | tee -a "$out/end-to-end.txt" || status=1
        done
        # Embedding beside rerank, 100 × 256 tokens, and instructed queries with
        # and without the shared instruction prefix, on the same 4B shape.
        if [[ -x "$DIR/embed" ]]; then
            local embedder=${TMPDIR:-/tmp}/tessera-qwen3-4b-random-embed-q8.gguf
            "$DIR/tessera" generate --shape 4b --kind embedding --out "$embedder" 2>&1 | tail -1
            timeout 180 "$DIR/embed" --reranker "$model" --embedder "$embedder" --backend cuda --runs 5 2>&1 \
                | tee "$out/embed.txt" || status=1
            rm -f "$embedder"
        fi
        # Served over HTTP: 4 clients × 2 requests × 100 documents, per arithmetic.
        for precision in w8a8 w8a16; do
            timeout 240 python3 scripts/load.py throughput --binary "$DIR/tessera" --clients 4 --requests 2 \
                --docs 100 --doc-words 180 \
                --serve-args "--backend cuda --gpu-precision $precision --model $model --max-batch-tokens 32768" 2>&1
        done | tee "$out/served.txt" || status=1
    else
        echo "end to end: no tessera binary with a cuda bench in $DIR" | tee "$out/end-to-end.txt"
    fi
    # wgpu on the GPU's own Vulkan driver: the loader and GLVND unpacked from the
    # carried packages when the machine has none.
    export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
    {
        if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
            for deb in "$DIR"/gl/*.deb; do
                [[ -f $deb ]] && dpkg -x "$deb" /
            done
            ldconfig
        fi
        local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        [[ -f $icd ]] && export VK_DRIVER_FILES=$icd
        local egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
        [[ -f $egl ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
        if [[ -f $icd ]]; then
            local lib
            lib=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ICD"]["library_path"])' "$icd" 2>/dev/null || true)
            echo "-- the ICD's library ($lib): missing dependencies, if any"
            [[ -n $lib ]] && (ldd "$lib" 2>&1 || ldd "$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')" 2>&1) | grep -i "not found" || true
        fi
        # A failure here must not end the run (set -e): it is reported below.
        TESSERA_REQUIRE_WGPU=1 timeout 240 "$DIR/parity" --nocapture --test-threads 1 2>&1 || true
        TESSERA_REQUIRE_WGPU=1 timeout 120 "$DIR/model_parity" --nocapture --test-threads 1 2>&1 || true
        if [[ -x "$DIR/tessera" && -f ${model:-} ]]; then
            timeout 180 "$DIR/tessera" bench --backend wgpu --model "$model" --docs 20 --doc-tokens 256 \
                --query-tokens 32 --batch-tokens 8192 --baseline-docs 0 --runs 3 --profile 2>&1 || true
        fi
    } | tee "$out/wgpu.txt" || true
    grep -qE "FAILED|panicked|test result: FAILED" "$out/wgpu.txt" && status=1
    # The op kit under compute-sanitizer (both arithmetics' kernels).
    local sanitizer=/usr/local/cuda/bin/compute-sanitizer
    if [[ -x $sanitizer ]]; then
        timeout 240 "$sanitizer" --tool memcheck "$DIR/gpu" every_op --test-threads 1 2>&1 \
            | tail -n 5 | tee "$out/memcheck.txt" || true
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
        [[ -f $out/embed.txt ]] && { echo "-- embedding beside rerank"; cat "$out/embed.txt"; }
        grep -E "tokens/s|ms" "$out/torch-baseline.txt" || true
        echo "-- served over HTTP (scripts/load.py throughput)"
        grep -E "^throughput|served|FAIL" "$out/served.txt" 2>/dev/null || echo "not run"
        echo "-- compute-sanitizer memcheck (op kit)"
        grep -E "ERROR SUMMARY|test result" "$out/memcheck.txt" 2>/dev/null || echo "not run"
        echo "-- wgpu on the GPU's Vulkan driver"
        grep -E "adapter|: on |worst|FAILED|panicked|test result|not found|median|summary" "$out/wgpu.txt" | sort -u || true
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
