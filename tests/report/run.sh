#!/usr/bin/env bash
# The report in a real browser: a short CPU sweep of the embedded tiny model in
# both arithmetics (fast and reference, with per-op profiles), `tessera report`
# on its records, then the page opened from disk in headless Chromium (Debian's
# package, installed here if missing) by check_page.py over the DevTools
# protocol: no console error, no request off the file, the charts there, a
# screenshot that is not blank. The checker is first shown to refuse a page
# that breaks each of those rules, and `tessera report` to refuse bad input by
# file and line.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v chromium >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq chromium >/dev/null
fi
venv=${TESSERA_REPORT_VENV:-/tmp/tessera-report-venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/report/requirements.txt
check() { "$venv/bin/python" tests/report/check_page.py "$@"; }

cargo build --quiet -p tessera-cli
bin=target/debug/tessera
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=target/report-check
mkdir -p "$out"

# The checker fails what it must: each rule broken once.
if check tests/report/bad_page.html >"$work/bad.txt"; then
    echo "check_page.py passed a page with errors and an outside request"; exit 1
fi
for reason in "request leaves the file" "console error: deliberate" "uncaught exception"; do
    grep -q "$reason" "$work/bad.txt" || { echo "check_page.py did not report: $reason"; cat "$work/bad.txt"; exit 1; }
done
printf '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>blank</title></head><body></body></html>\n' >"$work/blank.html"
if check "$work/blank.html" >"$work/blank.txt" || ! grep -q "screenshot is blank" "$work/blank.txt"; then
    echo "check_page.py did not find the blank page blank:"; cat "$work/blank.txt"; exit 1
fi

# Bad input is refused by file and line, never with a panic.
printf '{"tessera": "0.1.0"}\n' >"$work/bad.jsonl"
if "$bin" report "$work/bad.jsonl" --out "$work/x.html" 2>"$work/err.txt"; then
    echo "tessera report accepted a record without its fields"; exit 1
fi
grep -q "bad.jsonl:1: not a bench record" "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
if grep -q panicked "$work/err.txt"; then cat "$work/err.txt"; exit 1; fi

# The real thing: a short sweep in both CPU arithmetics, one file, one page.
grid=(--sweep --profile --sweep-docs 2,4 --sweep-doc-tokens 16,64 --sweep-batch-tokens 64,256 --runs 1)
"$bin" bench --backend cpu "${grid[@]}" --out "$work/results.jsonl" 2>"$work/fast.log"
"$bin" bench --backend cpu --precision reference "${grid[@]}" --out "$work/results.jsonl" 2>"$work/reference.log"
records=$(wc -l <"$work/results.jsonl")
[ "$records" -eq 16 ] || { echo "expected 16 records (8 points x 2 arithmetics), got $records"; exit 1; }
"$bin" report "$work/results.jsonl" --out "$out/report.html"
# A chart per section: runs, the CPU's roofline, time share, two sweep charts.
check "$out/report.html" --min-svg 5 --screenshot "$out/screenshot.png"
# Both runs on every chart's subtitle, with their ratio.
python3 - "$out/report.html" <<'PY'
import re, sys
page = open(sys.argv[1], encoding="utf-8").read()
charts = re.findall(r"<svg.*?</svg>", page, re.S)
for svg in charts:
    if not re.search(r"against fast · [^:]*: reference · [^<]*?[0-9.]+×", svg):
        print("a chart without both runs and their ratio:", svg[:300]); sys.exit(1)
print(f"{len(charts)} charts, each with both runs and their ratio")
PY
