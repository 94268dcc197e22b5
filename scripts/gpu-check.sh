#!/usr/bin/env bash
# The GPU check, sized for one lease of a lent GPU machine (15 minutes of device
# time for a whole task, one command at most 10 minutes; the working tree plus
# the carry at most 64 MiB on the wire; at most 8 files back from $OUT). The lent
# machines have the NVIDIA driver, CUDA with NVRTC, ptxas, ncu and
# compute-sanitizer, and python3 with torch and transformers, but no Rust and no
# network, so the check comes in three parts:
#
#   here:  scripts/gpu-check.sh build [DIR]   # default DIR: target/gpu-carry
#          release binaries (CUDA and wgpu test binaries, `tessera`, the embed
#          bench), stripped, in one xz archive, with Debian's Vulkan loader
#          packages; then `plan`.
#   here:  scripts/gpu-check.sh plan [DIR]    # no GPU, no build needed
#          the travelling size (tracked and untracked-but-not-ignored files plus
#          the carry; the carry's size from DIR, else from the committed record
#          of the last build), the files left in $OUT, and each step's budget
#          against the deadline. Fails when a limit is exceeded. `.ci/run` runs it.
#   there: scripts/gpu-check.sh run [DIR] [--deadline S]   # default 450 s
#          the steps below, most important first, each under its own budget; a
#          step that cannot fit in what is left of the deadline is skipped with
#          the reason, and no step can end the run. One summary line is printed
#          as each step ends; the whole summary prints last. $OUT receives
#          exactly two files: summary.txt and results.tar.gz (every log, the
#          JSON Lines records, the ncu reports), both rewritten after every step
#          so that a call cut short still returns what was done. Scratch (the
#          kernel cache, the 4.3 GB random models) lives under /tmp.
#          Every `tessera bench` record (JSON Lines, with the card's measured
#          ceilings and per-op profiles) goes to results/bench/; the run ends
#          with `tessera report` on them (results/report.html), and here
#          `tessera report results/bench/*.jsonl` makes the page again.
#
# The lease from the agent side: `run` with carry ["target/gpu-carry"], command
# `bash scripts/gpu-check.sh run`, timeout_s 540.
set -uo pipefail
cd "$(dirname "$0")/.."

# ---- the limits of a lent machine -------------------------------------------
WIRE_LIMIT=$((64 * 1024 * 1024))      # tracked + untracked + carry, on the wire
CARRY_LIMIT=$((24 * 1024 * 1024))     # our own cap for the carry
TREE_LIMIT=$((20 * 1024 * 1024))      # our own cap for the tracked tree
OUT_FILE_LIMIT=8                      # files back from $OUT
CALL_LIMIT=480                        # our cap for one call (the lease allows 600)
DEADLINE_DEFAULT=450
OUT_FILES=(summary.txt results.tar.gz)
# Seconds kept back from the deadline for packing the results.
RESERVE=10

# ---- the steps: name, budget (s), priority (1 = always tried first) -----------
# Budgets are caps, not estimates: a step ends by itself well inside its budget
# on an H100/H200; `timeout` enforces the cap.
STEPS=(
    "facts          30 1 device facts; NVRTC + ptxas of every kernel for this card"
    "parity         75 1 op parity kit, W8A8 and W8A16, against the f64 oracles"
    "tune           45 1 tessera tune: every W8A16 GEMM configuration on the 4B shapes, v2 beside"
    "kernels        90 1 matmul (five 4B shapes x M 512/4096/16384) and attention beside cuBLAS"
    "end_to_end    100 1 random 4B Q8_0 model, 100 x 256 + 32, both arithmetics, --profile"
    "transformers   60 1 transformers bf16 sdpa baseline, same workload"
    "model_parity   40 1 model parity on the tiny fixtures, both arithmetics"
    "sweep          75 2 tessera bench --sweep --profile, 4B, both arithmetics (the report's curves)"
    "ncu            60 2 ncu (3 sections) on the hottest matmul and attention kernels"
    "served         60 2 served over HTTP (scripts/load.py throughput), W8A16"
    "embeddings     45 2 embedding beside rerank on the 4B shape"
    "wgpu           60 2 wgpu on the card's Vulkan driver: op parity, model parity, bench"
    "memcheck       60 2 compute-sanitizer memcheck on the op kit (W8A8, W8A16)"
)

mode=${1:-}
shift || true
DIR=target/gpu-carry
DEADLINE=$DEADLINE_DEFAULT
while (($#)); do
    case $1 in
        --deadline) DEADLINE=${2:?--deadline needs seconds}; shift 2 ;;
        --deadline=*) DEADLINE=${1#*=}; shift ;;
        -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
        *) DIR=$1; shift ;;
    esac
done
if ! [[ $DEADLINE =~ ^[0-9]+$ ]] || ((DEADLINE < 60 || DEADLINE > 600)); then
    echo "gpu-check: --deadline must be a whole number of seconds from 60 to 600 (got $DEADLINE)" >&2
    exit 2
fi
RECORD=scripts/gpu-carry.size   # the last build's carry, committed for `plan`

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# ============================== build (here) =================================
build() {
    rm -rf "$DIR"
    local stage
    stage=$(mktemp -d)
    mkdir -p "$DIR" "$stage/bin"
    export TESSERA_GIT_COMMIT=${TESSERA_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
    echo "gpu-check: building the release test binaries (cuda, wgpu)"
    # cargo prints each executable it builds as JSON.
    cargo test --release --no-run -p tessera-backend-cuda --features cuda -p tessera-backend-wgpu \
        --message-format=json 2>"$stage/test-build.log" \
        | python3 -c '
import json, sys
wanted = {"gpu", "gpu_bench", "parity", "model_parity"}
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"] \
            and m["target"]["name"] in wanted:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
        cp "$exe" "$stage/bin/$name"
    done
    echo "gpu-check: building tessera (cuda, wgpu) and the embed bench"
    if ! cargo build --release -p tessera-cli --features cuda,wgpu 2>>"$stage/test-build.log"; then
        tail -20 "$stage/test-build.log" >&2
        echo "gpu-check: the tessera build failed" >&2
        exit 1
    fi
    cp target/release/tessera "$stage/bin/tessera"
    cargo build --release -p tessera-benches --features cuda --bin embed 2>>"$stage/test-build.log" &&
        cp target/release/embed "$stage/bin/embed"
    local missing=""
    for bin in gpu gpu_bench parity model_parity tessera embed; do
        [[ -f $stage/bin/$bin ]] || missing+=" $bin"
    done
    if [[ -n $missing ]]; then
        tail -20 "$stage/test-build.log" >&2
        echo "gpu-check: not built:$missing" >&2
        exit 1
    fi
    strip "$stage"/bin/*
    # The lent machines have NVIDIA's Vulkan ICD but no Vulkan loader and none of
    # the GLVND libraries the ICD links: Debian's packages, unpacked there.
    mkdir -p "$stage/gl" /tmp/tessera-apt/partial
    local apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/tessera-apt)
    if apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 &&
        (cd "$stage/gl" && apt-get "${apt_opts[@]}" download -qq \
            libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1); then
        echo "gpu-check: Vulkan loader and GLVND packages carried"
    else
        echo "gpu-check: could not download the Vulkan loader packages; wgpu will be skipped there"
    fi
    echo "$TESSERA_GIT_COMMIT" >"$stage/commit"
    echo "gpu-check: compressing (xz -9)"
    tar -C "$stage" -cf - bin gl commit | xz -9e -T2 >"$DIR/carry.tar.xz"
    (cd "$stage" && ls -l bin gl) >"$DIR/contents.txt"
    rm -rf "$stage"
    local bytes
    bytes=$(du -sb "$DIR" | cut -f1)
    printf '%s %s %s\n' "$bytes" "$TESSERA_GIT_COMMIT" "$(date -u +%Y-%m-%d)" >"$RECORD"
    echo "gpu-check: carry $(mib "$bytes") in $DIR (recorded in $RECORD)"
    plan
}

# ============================== plan (here) ==================================
plan() {
    local failed=0
    local tracked untracked carry carry_from
    tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{ s += $1 } END { print s + 0 }')
    if [[ -f $DIR/carry.tar.xz ]]; then
        carry=$(du -sb "$DIR" | cut -f1)
        carry_from="$DIR as built"
    elif [[ -f $RECORD ]]; then
        read -r carry commit day <"$RECORD"
        carry_from="$RECORD: the build of $day at $commit"
    else
        carry=0
        carry_from="no build and no record"
        echo "FAIL carry: $DIR is not built and $RECORD is missing (run: scripts/gpu-check.sh build)"
        failed=1
    fi
    local wire=$((tracked + untracked + carry))
    printf '%-34s %12s   limit %s\n' "tracked files" "$(mib "$tracked")" "$(mib $TREE_LIMIT)"
    printf '%-34s %12s\n' "untracked, not ignored" "$(mib "$untracked")"
    printf '%-34s %12s   limit %s (%s)\n' "carry" "$(mib "$carry")" "$(mib $CARRY_LIMIT)" "$carry_from"
    printf '%-34s %12s   limit %s\n' "on the wire" "$(mib "$wire")" "$(mib $WIRE_LIMIT)"
    ((tracked <= TREE_LIMIT)) || { echo "FAIL tracked files over $(mib $TREE_LIMIT)"; failed=1; }
    ((carry <= CARRY_LIMIT)) || { echo "FAIL carry over $(mib $CARRY_LIMIT)"; failed=1; }
    ((wire <= WIRE_LIMIT)) || { echo "FAIL over the $(mib $WIRE_LIMIT) a call may carry"; failed=1; }
    printf '%-34s %12s   limit %s\n' "files left in \$OUT" "${#OUT_FILES[@]} (${OUT_FILES[*]})" "$OUT_FILE_LIMIT"
    ((${#OUT_FILES[@]} <= OUT_FILE_LIMIT)) || { echo "FAIL too many files in \$OUT"; failed=1; }
    echo "deadline ${DEADLINE} s (one call at most ${CALL_LIMIT} s here; ${RESERVE} s kept for packing):"
    ((DEADLINE <= CALL_LIMIT)) || { echo "FAIL the deadline is over ${CALL_LIMIT} s"; failed=1; }
    local first=0 all=0 line name budget priority what
    for line in "${STEPS[@]}"; do
        read -r name budget priority what <<<"$line"
        all=$((all + budget))
        ((priority == 1)) && first=$((first + budget))
        printf '  %-13s %4d s  %s  %s\n' "$name" "$budget" \
            "$( ((priority == 1)) && echo "first " || echo "if time")" "$what"
    done
    printf '  %-13s %4d s  (priority steps; the rest run while time lasts: %d s in all)\n' \
        "first" "$first" "$all"
    if ((first + RESERVE > DEADLINE)); then
        echo "FAIL the priority steps' budgets ($first s + $RESERVE s) exceed the deadline ($DEADLINE s)"
        failed=1
    fi
    if ((failed)); then
        echo "gpu-check plan: FAILED"
        return 1
    fi
    echo "gpu-check plan: fits"
}

# ============================== run (there) ==================================
WORK=/tmp/tessera-gpu-check
LOGS=$WORK/results
OUT_DIR=${OUT:-target/gpu-results}

now() { echo $((SECONDS)); }

# Rewrites the two files in $OUT from what is done so far.
pack() {
    mkdir -p "$OUT_DIR"
    tar -C "$WORK" -czf "$OUT_DIR/results.tar.gz.tmp" results 2>/dev/null &&
        mv "$OUT_DIR/results.tar.gz.tmp" "$OUT_DIR/results.tar.gz"
    cp "$LOGS/summary.txt" "$OUT_DIR/summary.txt" 2>/dev/null || true
}

note() { echo "$*" | tee -a "$LOGS/summary.txt"; }

# Runs step $1 (function step_$1) under its budget, unless the deadline cannot
# hold it. Nothing a step does can end the run.
run_step() {
    local name=$1 budget=$2 left
    left=$((DEADLINE - RESERVE - $(now)))
    if ((left < budget)); then
        note "[gpu-check] $name: skipped, ${left} s left of the deadline and its budget is ${budget} s"
        return
    fi
    local start=$SECONDS status
    # A subshell in its own process group (job control on): a failing command,
    # `exit` or `set -e` inside the step ends only it, and at its budget the
    # whole group goes, servers a step started included.
    set -m
    ( "step_$name" ) >"$LOGS/$name.log" 2>&1 &
    local pid=$!
    set +m
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS - start >= budget)); then
            kill -TERM -- "-$pid" 2>/dev/null
            sleep 2
            kill -KILL -- "-$pid" 2>/dev/null
            waited=1
            break
        fi
        sleep 1
    done
    wait "$pid" 2>/dev/null
    status=$?
    local took=$((SECONDS - start)) digest
    digest=$("digest_$name" 2>/dev/null | head -c 600 | tr '\n' ';' | sed 's/;$//')
    if ((waited)); then
        note "[gpu-check] $name: CUT at its ${budget} s budget; ${digest:-no result}"
    elif ((status == 0)); then
        note "[gpu-check] $name: ok in ${took} s; ${digest}"
    else
        note "[gpu-check] $name: FAILED (status $status) in ${took} s; ${digest:-see $name.log}"
    fi
    pack
}

setup() {
    rm -rf "$WORK"
    mkdir -p "$WORK/bin" "$LOGS/bench"
    : >"$LOGS/summary.txt"
    if [[ ! -f $DIR/carry.tar.xz ]]; then
        note "[gpu-check] no carry in $DIR: run 'scripts/gpu-check.sh build' on a machine with Rust and carry $DIR"
        pack
        exit 1
    fi
    python3 - "$DIR/carry.tar.xz" "$WORK" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as t:
    t.extractall(sys.argv[2])
PY
    chmod +x "$WORK"/bin/*
    BIN=$WORK/bin
    note "[gpu-check] $(date -u +%FT%TZ) deadline ${DEADLINE} s; binaries of commit $(cat "$WORK/commit" 2>/dev/null || echo unknown); tree $(git rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")"
    # The kernels are compiled at run time by this machine's NVRTC.
    if ! ldconfig -p | grep -q libnvrtc.so; then
        local d
        for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
            [[ -d $d ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        done
    fi
    # cuBLAS for the anchors (CUDA toolkit or PyTorch's wheels).
    local cublas
    cublas=$(bash scripts/find-cublas.sh 2>/dev/null || true)
    [[ -n $cublas ]] && export LD_LIBRARY_PATH="$cublas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PATH="/usr/local/cuda/bin:$PATH"
    export TESSERA_KERNEL_CACHE=$WORK/kernel-cache
    # The test binaries rebuild the tiny fixtures here (crates/fixtures).
    export TESSERA_FIXTURES_DIR=$WORK/fixtures
    MODEL=$WORK/qwen3-4b-random-q8.gguf
    EMBEDDER=$WORK/qwen3-4b-random-embed-q8.gguf
    export BIN MODEL EMBEDDER
}

# A test that found no GPU passes after printing "skipped: <why>": say so.
skipped_note() {
    local n
    n=$(grep -c "skipped: " "$1" 2>/dev/null)
    ((n > 0)) && echo "$n SKIPPED: $(grep -m1 -o 'skipped: .*' "$1" | head -c 120)"
    return 0
}

# ---- the steps ---------------------------------------------------------------
step_facts() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit --format=csv
    nvcc --version 2>/dev/null | tail -1
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null
    local cap arch nvrtc ok=0 bad=0
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
    arch=compute_$cap
    [[ $cap == 90 ]] && arch=compute_90a
    nvrtc=$(ldconfig -p | awk '/libnvrtc\.so/ {print $NF; exit}')
    if [[ -z $nvrtc ]]; then
        nvrtc=$(ls /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so* 2>/dev/null | head -1)
    fi
    echo "NVRTC $nvrtc, target $arch"
    mkdir -p "$WORK/ptx"
    local src stem
    for src in kernels/*.cu; do
        stem=$(basename "$src" .cu)
        if python3 scripts/nvrtc_ptx.py "$nvrtc" "$src" "$arch" "$WORK/ptx/$stem.ptx" >"$WORK/ptx/$stem.log" 2>&1; then
            ok=$((ok + 1))
            ptxas -arch="sm_${arch#compute_}" -v "$WORK/ptx/$stem.ptx" -o /dev/null 2>&1 \
                | grep -E "Compiling entry|registers|spill" | sed "s/^/$stem: /"
        else
            bad=$((bad + 1))
            echo "NVRTC FAILED on $stem.cu:"
            cat "$WORK/ptx/$stem.log"
        fi
    done
    echo "kernels: $ok compiled, $bad failed for $arch"
    ((bad == 0))
}
digest_facts() {
    head -2 "$LOGS/facts.log" | tail -1
    grep -E "^kernels:" "$LOGS/facts.log"
    local spills
    spills=$(grep -cE "[1-9][0-9]* bytes spill (stores|loads)" "$LOGS/facts.log")
    echo "entries with spills: $spills"
}

step_parity() {
    # The op kit in both arithmetics, and the wgmma probe (the emulator's
    # reading of the Hopper instruction checked against this card).
    "$BIN/gpu" every_op wgmma_probe --nocapture --test-threads 1
}
digest_parity() {
    grep -E "test result" "$LOGS/parity.log" | tail -1
    grep -E "wgmma probe|wgmma needs" "$LOGS/parity.log" | head -6
    grep -cE "FAILED|panicked" "$LOGS/parity.log" | sed 's/^/failure lines: /'
    skipped_note "$LOGS/parity.log"
}

step_tune() {
    "$BIN/tessera" tune --rows 512,4096,16384 --repeats 3 --out "$LOGS/tuning.json"
}
digest_tune() {
    # The table's summary lines (shape, rows, winner, µs, TFLOP/s, × over v2).
    grep -E "^n [0-9]" "$LOGS/tune.log" | sed -E 's/ +/ /g'
    [[ -f $LOGS/tuning.json ]] || echo "no table written"
}

step_kernels() {
    TESSERA_GPU_BENCH=1 TESSERA_BENCH_JSON="$LOGS/kernels.jsonl" \
        "$BIN/gpu_bench" --nocapture --test-threads 1 matmul_q8_0_throughput attention_throughput
}
digest_kernels() {
    python3 - "$LOGS/kernels.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def r(a, b):
    return f"{b / a:.2f}x" if a and b else "-"
for x in rows:
    if x.get("bench") == "matmul_q8_0" and x["k"] == 2560 and x["n"] == 9728:
        print(f"matmul M={x['m']} 2560->9728 vs cuBLAS bf16: w8a8 {r(x['w8a8_ms'], x.get('cublas_bf16_ms'))}"
              f" w8a16 {r(x.get('w8a16_ms'), x.get('cublas_bf16_ms'))} ({x.get('w8a16_tflops') or 0:.0f} TFLOP/s)")
    if x.get("bench") == "attention":
        print(f"attention {x['arithmetic']} {x.get('kernel', '')} {x['docs']}x{x['doc_tokens']}+{x['prefix_tokens']}: {x['tflops']:.0f} TFLOP/s")
PY
    skipped_note "$LOGS/kernels.log"
}

step_end_to_end() {
    timeout 60 "$BIN/tessera" generate --shape 4b --out "$MODEL" 2>&1 | tail -1
    [[ -f $MODEL ]] || { echo "no model"; return 1; }
    local precision status=0
    local tuning=default
    [[ -f $LOGS/tuning.json ]] && tuning=$LOGS/tuning.json  # what `tune` measured on this card
    for precision in w8a8 w8a16; do
        echo "-- --gpu-precision $precision"
        "$BIN/tessera" bench --backend cuda --gpu-precision "$precision" --tuning "$tuning" --model "$MODEL" --docs 100 \
            --doc-tokens 256 --query-tokens 32 --batch-tokens 32768 --baseline-docs 0 --runs 3 --profile \
            --format json 2>&1 >>"$LOGS/bench/end_to_end.jsonl" || status=1
    done
    return $status
}

# A small grid of the rerank workload in both arithmetics, each point profiled:
# the report's tokens/s curves against batch tokens and document length.
step_sweep() {
    [[ -f $MODEL ]] || { echo "no 4B model (end-to-end did not run)"; return 1; }
    local precision status=0
    local tuning=default
    [[ -f $LOGS/tuning.json ]] && tuning=$LOGS/tuning.json
    for precision in w8a16 w8a8; do
        echo "-- --gpu-precision $precision"
        "$BIN/tessera" bench --backend cuda --gpu-precision "$precision" --tuning "$tuning" --model "$MODEL" \
            --sweep --profile --sweep-docs 32 --sweep-doc-tokens 128,512 --sweep-batch-tokens 4096,16384 \
            --runs 2 --out "$LOGS/bench/sweep.jsonl" || status=1
    done
    return $status
}
digest_sweep() {
    grep -cE '"workload":"rerank"' "$LOGS/bench/sweep.jsonl" 2>/dev/null | sed 's/$/ sweep records/'
    grep -E "^ceilings" "$LOGS/sweep.log" | head -1
}
digest_end_to_end() {
    awk '/^-- --gpu-precision/ {p = $3} /median/ {print p": "$0}' "$LOGS/end_to_end.log" | sed -E 's/ +/ /g'
}

step_transformers() {
    python3 scripts/torch_baseline.py --docs 100 --doc-tokens 256 --query-tokens 32
}
digest_transformers() {
    grep -E "billed tokens/s" "$LOGS/transformers.log"
    ratio_line
}

# tessera's median billed tokens/s over transformers' (the same 100 x 288 pairs).
ratio_line() {
    python3 - "$LOGS/end_to_end.log" "$LOGS/transformers.log" <<'PY'
import re, sys
try:
    text = open(sys.argv[1]).read()
    torch = re.findall(r"([\d,]+) billed tokens/s", open(sys.argv[2]).read())
except OSError:
    sys.exit()
for part in text.split("-- --gpu-precision ")[1:]:
    precision = part.split()[0]
    ours = re.findall(r"median\s+[\d.]+ s\s+([\d.]+) tokens/s", part)
    if ours and torch:
        a, b = float(ours[-1]), float(torch[-1].replace(",", ""))
        print(f"end to end ({precision}): tessera {a:,.0f} vs transformers bf16 {b:,.0f} billed tokens/s = {a / b:.2f}x")
PY
}

step_model_parity() {
    "$BIN/gpu" scores_match --nocapture --test-threads 1
}
digest_model_parity() {
    grep -E "pairs, \|score" "$LOGS/model_parity.log" | head -6
    grep -E "test result" "$LOGS/model_parity.log" | tail -1
    skipped_note "$LOGS/model_parity.log"
}

step_ncu() {
    [[ -f $MODEL ]] || { echo "no 4B model (end-to-end did not run)"; return 1; }
    local ncu
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
    [[ -n $ncu ]] || { echo "no ncu"; return 1; }
    # The two hottest kernels of the W8A16 pass (the profile of end-to-end names
    # them): the GEMM and attention. A layer launches five to seven matmuls and
    # one attention, so 8 consecutive launches after the warm-up's first layers
    # hold both.
    "$ncu" --clock-control none --target-processes all \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
        -k 'regex:matmul_w8a16_|matmul_q8_0_w8a16|attention_f16kv|attention_mma|attention_wgmma' --launch-skip 40 --launch-count 8 \
        -o "$LOGS/ncu-w8a16" -f \
        "$BIN/tessera" bench --backend cuda --gpu-precision w8a16 --model "$MODEL" --docs 20 \
        --doc-tokens 256 --query-tokens 32 --batch-tokens 8192 --baseline-docs 0 --runs 1
    "$ncu" --import "$LOGS/ncu-w8a16.ncu-rep" --page details --csv >"$LOGS/ncu-w8a16.csv" 2>/dev/null || true
}
digest_ncu() {
    grep -E '"(Compute \(SM\) Throughput|Memory Throughput|Duration)"' "$LOGS/ncu-w8a16.csv" 2>/dev/null \
        | awk -F'","' '{print $5": "$(NF-2)" "$(NF-1)" "$NF}' | tr -d '"' | head -8
}

step_served() {
    [[ -f $MODEL ]] || { echo "no 4B model (end-to-end did not run)"; return 1; }
    python3 scripts/load.py throughput --binary "$BIN/tessera" --clients 4 --requests 2 \
        --docs 100 --doc-words 180 \
        --serve-args "--backend cuda --gpu-precision w8a16 --model $MODEL --max-batch-tokens 32768"
}
digest_served() {
    grep -E "served .* billed tokens/s|FAIL" "$LOGS/served.log" | head -3
}

step_embeddings() {
    [[ -f $MODEL ]] || { echo "no 4B model (end-to-end did not run)"; return 1; }
    timeout 40 "$BIN/tessera" generate --shape 4b --kind embedding --out "$EMBEDDER" 2>&1 | tail -1
    local status=0
    "$BIN/embed" --reranker "$MODEL" --embedder "$EMBEDDER" --backend cuda --runs 3 || status=1
    rm -f "$EMBEDDER"
    return $status
}
digest_embeddings() {
    grep -E "tokens/s|x " "$LOGS/embeddings.log" | tail -4
}

step_wgpu() {
    export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
    if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
        local deb
        for deb in "$WORK"/gl/*.deb; do
            [[ -f $deb ]] && dpkg -x "$deb" /
        done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [[ -f $icd ]] && export VK_DRIVER_FILES=$icd
    local egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    [[ -f $egl ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
    local status=0
    TESSERA_REQUIRE_WGPU=1 timeout 25 "$BIN/parity" --nocapture --test-threads 1 || status=1
    TESSERA_REQUIRE_WGPU=1 timeout 15 "$BIN/model_parity" --nocapture --test-threads 1 || status=1
    if [[ -f $MODEL ]]; then
        timeout 15 "$BIN/tessera" bench --backend wgpu --model "$MODEL" --docs 10 --doc-tokens 256 \
            --query-tokens 32 --batch-tokens 4096 --baseline-docs 0 --runs 2 \
            --format json 2>&1 >>"$LOGS/bench/wgpu.jsonl" || status=1
    fi
    return $status
}
digest_wgpu() {
    grep -E "adapter|test result|median" "$LOGS/wgpu.log" | sort -u | head -5
}

step_memcheck() {
    local sanitizer
    sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
    [[ -n $sanitizer ]] || { echo "no compute-sanitizer"; return 1; }
    # Both arithmetics: W8A16's v3 GEMMs zero-fill past the matrices with
    # cp.async from addresses they never read (src-size 0), which memcheck
    # would be the first to object to.
    local kit
    for kit in every_op_on_the_gpu every_op_on_the_gpu_in_w8a16; do
        echo "-- $kit"
        "$sanitizer" --tool memcheck "$BIN/gpu" "$kit" --exact --test-threads 1 2>&1 | tail -n 8
    done
}
digest_memcheck() {
    grep -E "^-- |ERROR SUMMARY|test result" "$LOGS/memcheck.log" | head -6
}

run() {
    setup
    local line name budget priority what
    for line in "${STEPS[@]}"; do
        read -r name budget priority what <<<"$line"
        run_step "$name" "$budget"
    done
    {
        echo "==================== gpu-check summary ===================="
        cat "$LOGS/summary.txt"
        echo "-- op parity (NMSE per case; FAILED lines if any)"
        grep -E "^(rms_norm|matmul|rope|attention|swiglu|add|embedding|score_head|norm_matmuls|qk_norm_rope|matmul_add|swiglu_mm_add) " \
            "$LOGS/parity.log" 2>/dev/null | awk '{print $1, $2, $4}' | column -t
        grep -E "FAILED|panicked" "$LOGS/parity.log" 2>/dev/null
        echo "-- kernels beside cuBLAS"
        grep -E "^(matmul|attention|device|  cuBLAS)|anchors|skipped" "$LOGS/kernels.log" 2>/dev/null
        echo "-- end to end"
        grep -vE "^profile    (L[0-9]|op )" "$LOGS/end_to_end.log" 2>/dev/null
        ratio_line
        echo "-- report"
        if compgen -G "$LOGS/bench/*.jsonl" >/dev/null; then
            "$BIN/tessera" report "$LOGS"/bench/*.jsonl --out "$LOGS/report.html" 2>&1 | tail -1
        else
            echo "no bench records"
        fi
        echo "-- total $(now) s of the ${DEADLINE} s deadline"
    } >"$LOGS/full-summary.txt"
    cat "$LOGS/full-summary.txt"
    cat "$LOGS/full-summary.txt" >>"$LOGS/summary.txt"
    pack
}

case $mode in
    build) build ;;
    plan) plan ;;
    run) run ;;
    *)
        echo "usage: $0 build|plan|run [DIR] [--deadline S]" >&2
        exit 2
        ;;
esac
