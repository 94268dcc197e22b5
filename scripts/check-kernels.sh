#!/usr/bin/env bash
# Compiles every kernels/*.cu with NVRTC (libnvrtc from PyPI, the compiler the CUDA
# backend uses at run time) for compute_80, compute_90 and compute_90a, and
# assembles each PTX with ptxas for the matching sm_XX (NVRTC does not check inline
# PTX; ptxas does). Keeps ptxas' register/spill report. Exits non-zero on any
# failure. Needs python3 with venv and PyPI access on its first run.
#
#   scripts/check-kernels.sh            # report in target/kernel-check/
#   KERNEL_CHECK_OUT=dir scripts/check-kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned toolkit wheels (CUDA 13.5): NVRTC, ptxas (in nvcc), cccl for headers, and
# cuobjdump + nvdisasm to read the assembled code.
PINS=(nvidia-cuda-nvrtc==13.5.37 nvidia-cuda-nvcc==13.5.37 nvidia-cuda-cccl==13.3.5.0.6
      nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)
VENV=${TESSERA_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/cuda-venv-13.5.37}
OUT=${KERNEL_CHECK_OUT:-target/kernel-check}
ARCHS=(80 90 90a)

missing=()
for pin in "${PINS[@]}"; do
    "$VENV/bin/pip" show "${pin%%==*}" >/dev/null 2>&1 || missing+=("$pin")
done
if ((${#missing[@]} > 0)); then
    echo "check-kernels: installing ${missing[*]} into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi
CUDA=$("$VENV/bin/python" - <<'PY'
import pathlib, site
for root in site.getsitepackages():
    candidate = pathlib.Path(root) / "nvidia" / "cu13"
    if (candidate / "lib" / "libnvrtc.so.13").exists():
        print(candidate)
        break
PY
)
if [[ -z "$CUDA" ]]; then
    echo "check-kernels: libnvrtc.so.13 not found in $VENV" >&2
    exit 1
fi
NVRTC="$CUDA/lib/libnvrtc.so.13"
PTXAS="$CUDA/bin/ptxas"
CUOBJDUMP="$CUDA/bin/cuobjdump"
export PATH="$CUDA/bin:$PATH"  # cuobjdump runs nvdisasm
export LD_LIBRARY_PATH="$CUDA/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

rm -rf "$OUT"
mkdir -p "$OUT"
REPORT="$OUT/ptxas-report.txt"
SUMMARY="$OUT/summary.txt"
: >"$REPORT"
failures=0
for arch in "${ARCHS[@]}"; do
    mkdir -p "$OUT/sm_$arch"
    for source in kernels/*.cu; do
        stem=$(basename "$source" .cu)
        ptx="$OUT/sm_$arch/$stem.ptx"
        if ! "$VENV/bin/python" scripts/nvrtc_ptx.py "$NVRTC" "$source" "compute_$arch" "$ptx" >"$OUT/sm_$arch/$stem.nvrtc.log" 2>&1; then
            echo "FAILED nvrtc $stem for compute_$arch:"
            cat "$OUT/sm_$arch/$stem.nvrtc.log"
            failures=$((failures + 1))
            continue
        fi
        if ! "$PTXAS" -arch="sm_$arch" -v "$ptx" -o "$OUT/sm_$arch/$stem.cubin" >"$OUT/sm_$arch/$stem.ptxas.log" 2>&1; then
            echo "FAILED ptxas $stem for sm_$arch:"
            cat "$OUT/sm_$arch/$stem.ptxas.log"
            failures=$((failures + 1))
            continue
        fi
        {
            echo "== $stem sm_$arch"
            cat "$OUT/sm_$arch/$stem.ptxas.log"
        } >>"$REPORT"
    done
done

# One line per kernel and architecture: registers, spill stores/loads, shared memory.
"$VENV/bin/python" - "$REPORT" >"$SUMMARY" <<'PY'
import re, sys
kernel = arch = None
rows, spill = [], {}
for line in open(sys.argv[1]):
    m = re.search(r"Compiling entry function '(\w+)' for '(\w+)'", line)
    if m:
        kernel, arch = m.groups()
        continue
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and kernel:
        spill[(kernel, arch)] = (int(m.group(1)), int(m.group(2)))
    m = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
    if m and kernel:
        stores, loads = spill.get((kernel, arch), (0, 0))
        rows.append((arch, kernel, int(m.group(1)), stores, loads, int(m.group(2) or 0)))
        kernel = None
print(f"{'arch':<7} {'kernel':<22} {'regs':>5} {'spill st':>9} {'spill ld':>9} {'smem':>7}")
for arch, kernel, regs, stores, loads, smem in sorted(rows):
    print(f"{arch:<7} {kernel:<22} {regs:>5} {stores:>9} {loads:>9} {smem:>7}")
PY
# The int8 matmuls' inner loops: instruction mix per k step, and no slow
# integer → float conversion (I2F/I2FP run at 16 per clock per SM; the kernels
# get float sums from biased integer accumulators instead, see common.cuh).
LOOPS="$OUT/hot-loops.txt"
: >"$LOOPS"
for arch in "${ARCHS[@]}"; do
    cubin="$OUT/sm_$arch/matmul_q8_0.cubin"
    [[ -f "$cubin" ]] || continue
    for kernel in matmul_q8_0_mma matmul_q8_0_dp4a; do
        if ! line=$("$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" "$kernel" --forbid I2F I2FP); then
            echo "FAILED hot loop of $kernel for sm_$arch: $line"
            failures=$((failures + 1))
        fi
        echo "sm_$arch $line" >>"$LOOPS"
    done
    # The W8A16 matmuls' k loops: int8 → f16 by byte permutes and f16x2
    # arithmetic, no conversion instruction (I2F, I2FP, F2F) per weight; the v3
    # configurations within an issue budget per HMMA and without spills in the
    # loop (docs/kernels.md: 3.5 for the 64 × 64 warp tiles, 6 for the 64 × 32
    # warp tiles of the few-row configuration; v2 is the baseline, unbounded).
    cubin="$OUT/sm_$arch/matmul_w8a16.cubin"
    if [[ -f "$cubin" ]]; then
        for spec in matmul_q8_0_w8a16: matmul_w8a16_256x128:3.5 matmul_w8a16_128x256:3.5 \
                    matmul_w8a16_128x128:3.5 matmul_w8a16_64x128:6; do
            kernel=${spec%%:*} budget=${spec#*:}
            if ! line=$("$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" "$kernel" \
                    ${budget:+--max-per-mma "$budget"} --forbid I2F I2FP F2F); then
                echo "FAILED hot loop of $kernel for sm_$arch: $line"
                failures=$((failures + 1))
            fi
            echo "sm_$arch $line" >>"$LOOPS"
        done
    fi
    # The wgmma probe: on sm_90a its loop issues HGMMA (the warpgroup mma the
    # Hopper kernels build on); other targets compile its trap.
    cubin="$OUT/sm_$arch/wgmma_probe.cubin"
    if [[ $arch == 90a && -f "$cubin" ]]; then
        line=$("$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" wgmma_probe_64x64 || true)
        if [[ $line != *HGMMA* ]]; then
            echo "FAILED: no HGMMA in the sm_90a loop of wgmma_probe_64x64: $line"
            failures=$((failures + 1))
        fi
        echo "sm_$arch $line" >>"$LOOPS"
    fi
    # The wgmma W8A16 GEMMs: on sm_90a their k loop issues HGMMA, and ptxas did
    # not serialise the wgmma (warnings C7510-C7519: an input or accumulator
    # register defined while a wgmma group is in flight, too few registers);
    # other targets compile their trap.
    cubin="$OUT/sm_$arch/matmul_w8a16_wgmma.cubin"
    if [[ $arch == 90a && -f "$cubin" ]]; then
        if grep -q "C751[0-9]" "$OUT/sm_$arch/matmul_w8a16_wgmma.ptxas.log"; then
            echo "FAILED: ptxas serialises the wgmma of matmul_w8a16_wgmma:"
            grep "C751[0-9]" "$OUT/sm_$arch/matmul_w8a16_wgmma.ptxas.log"
            failures=$((failures + 1))
        fi
        for kernel in matmul_w8a16_wgmma_128x128 matmul_w8a16_wgmma_256x128 matmul_w8a16_wgmma_tma_256x128 \
                matmul_w8a16_wgmma_tma_persistent_256x128; do
            if ! line=$("$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" "$kernel" \
                    --forbid I2F I2FP F2F LDL STL) || [[ $line != *HGMMA* ]]; then
                echo "FAILED hot loop of $kernel for sm_$arch (HGMMA expected, no conversion or spill): $line"
                failures=$((failures + 1))
            fi
            echo "sm_$arch $line" >>"$LOOPS"
        done
    fi
    # Attention's arithmetic loops and their shared-memory loads per FMA (report only).
    cubin="$OUT/sm_$arch/attention.cubin"
    if [[ -f "$cubin" ]]; then
        "$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" attention_f32_d128 --loops FFMA \
            | sed "s/^/sm_$arch /" >>"$LOOPS" || true
        # The tensor-core attention's key-tile loops (static count: the masked and
        # the unmasked tile paths both lie inside them): v2 reported, v3 held to
        # 6 instructions per HMMA without spills (docs/kernels.md).
        "$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" attention_mma_d128 \
            | sed "s/^/sm_$arch /" >>"$LOOPS" || true
        if ! line=$("$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" attention_f16kv_d128 \
                --max-per-mma 6); then
            echo "FAILED hot loop of attention_f16kv_d128 for sm_$arch: $line"
            failures=$((failures + 1))
        fi
        echo "sm_$arch $line" >>"$LOOPS"
    fi
    # v4, the wgmma attention: on sm_90a its key loop issues HGMMA (S = Q·Kᵀ
    # and O += P·V), without spills, and ptxas did not serialise its wgmma
    # (C7510-C7519, as for the wgmma GEMMs); other targets compile its trap.
    cubin="$OUT/sm_$arch/attention_wgmma.cubin"
    if [[ $arch == 90a && -f "$cubin" ]]; then
        if grep -q "C751[0-9]" "$OUT/sm_$arch/attention_wgmma.ptxas.log"; then
            echo "FAILED: ptxas serialises the wgmma of the attention:"
            grep "C751[0-9]" "$OUT/sm_$arch/attention_wgmma.ptxas.log"
            failures=$((failures + 1))
        fi
        for kernel in attention_wgmma_d64 attention_wgmma_d128; do
            # --innermost: tile 0's S is issued before the (pipelined) loop.
            if ! line=$("$VENV/bin/python" scripts/sass_loop_mix.py "$CUOBJDUMP" "$cubin" "$kernel" \
                    --innermost --forbid LDL STL) || [[ $line != *HGMMA* ]]; then
                echo "FAILED hot loop of $kernel for sm_$arch (HGMMA expected, no spill): $line"
                failures=$((failures + 1))
            fi
            echo "sm_$arch $line" >>"$LOOPS"
        done
    fi
done
cat "$SUMMARY" "$LOOPS"
if ((failures > 0)); then
    echo "check-kernels: $failures compilation(s) failed"
    exit 1
fi
kernels=$(grep -c . "$SUMMARY")
echo "check-kernels: every kernel compiles (NVRTC) and assembles (ptxas) for ${ARCHS[*]/#/sm_}; $((kernels - 1)) kernel builds, report in $REPORT"
