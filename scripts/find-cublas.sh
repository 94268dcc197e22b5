#!/usr/bin/env bash
# Prints, colon-separated, the directories holding libcublas.so* or libcublasLt.so*
# (the CUDA toolkit, distribution packages, PyTorch's nvidia-* wheels), so that
# cudarc can open them at run time for the GPU benchmark's cuBLAS anchors:
#
#   export LD_LIBRARY_PATH=$(scripts/find-cublas.sh):$LD_LIBRARY_PATH
#
# Prints nothing when none is found; always exits 0.
set -u

roots=(/usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib /usr/local/cuda* /usr)

# Python site-packages: the nvidia-cublas-cu12 wheel installs nvidia/cublas/lib,
# the CUDA 13 wheels nvidia/cu13/lib.
if command -v python3 >/dev/null 2>&1; then
    while IFS= read -r dir; do
        [ -n "$dir" ] && roots+=("$dir")
    done < <(python3 - 2>/dev/null <<'EOF'
import os, site, sys
dirs = list(getattr(site, "getsitepackages", lambda: [])())
dirs.append(site.getusersitepackages())
dirs += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
try:
    import nvidia.cublas as cublas
    dirs += [os.path.join(p, "lib") for p in cublas.__path__]
except Exception:
    pass
for d in dirs:
    print(d)
EOF
    )
fi

found=()
for root in "${roots[@]}"; do
    [ -d "$root" ] || continue
    while IFS= read -r lib; do
        found+=("$(dirname "$lib")")
    done < <(find -H "$root" -xdev \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' \) \
        \( -type f -o -type l \) 2>/dev/null)
done

# Unique, in the order found (the toolkit before system and Python copies).
declare -A seen=()
out=()
for dir in "${found[@]+"${found[@]}"}"; do
    dir=$(cd "$dir" 2>/dev/null && pwd -P) || continue
    if [ -z "${seen[$dir]+x}" ]; then
        seen[$dir]=1
        out+=("$dir")
    fi
done
if [ "${#out[@]}" -gt 0 ]; then
    (IFS=:; printf '%s\n' "${out[*]}")
fi
exit 0
