#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on the
# nightly toolchain, starting from the committed corpus in fuzz/corpus/<target>.
# New corpus entries are merged back into fuzz/corpus (minimised); a crash is
# copied into fuzz/regressions/<target>/, where `cargo test -p
# tessera-fuzz-cases` replays it on every run from then on.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: gguf prompt request embeddings
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf prompt request embeddings)

if ! rustup toolchain list | grep -q nightly; then
    echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo +nightly install --locked cargo-fuzz
fi

jobs=$(nproc)
status=0
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    work=fuzz/target/corpus-$target
    mkdir -p "$corpus" "$work" "fuzz/regressions/$target"
    echo "=== $target: ${seconds}s, $jobs workers"
    log=fuzz/target/$target.log
    set +e
    # -max_len 65536: GGUF seeds are a few KiB and requests carry documents.
    (cd fuzz && cargo +nightly fuzz run "$target" "../$work" "../$corpus" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
        -workers="$jobs" -jobs="$jobs" -print_final_stats=1) >"$log" 2>&1
    rc=$?
    set -e
    grep -h -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" fuzz/fuzz-*.log 2>/dev/null \
        | awk -v t="$target" '/executed_units/ {n += $2} /peak_rss/ {if ($2 > m) m = $2}
              END {printf "=== %s: %d executions, peak RSS %d MiB\n", t, n, m}'
    rm -f fuzz/fuzz-*.log
    for crash in fuzz/artifacts/"$target"/crash-* fuzz/artifacts/"$target"/timeout-* fuzz/artifacts/"$target"/oom-*; do
        [ -e "$crash" ] || continue
        cp "$crash" "fuzz/regressions/$target/"
        echo "=== $target: FOUND $(basename "$crash") — kept in fuzz/regressions/$target/"
        status=1
    done
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then
        echo "=== $target: the fuzzer exited with $rc; see $log" >&2
        tail -20 "$log" >&2
        status=$rc
    fi
    # Fold the inputs that found new coverage into the committed corpus.
    (cd fuzz && cargo +nightly fuzz run "$target" "../$corpus" "../$work" -- \
        -merge=1 -max_len=65536) >/dev/null 2>&1 || true
    find "$work" -type f -delete
done
exit $status
