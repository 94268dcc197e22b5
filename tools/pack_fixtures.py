#!/usr/bin/env python3
"""Packs the model fixtures that tools/make_fixtures.py wrote (tests/fixtures/*.gguf) into
the compact form the repository keeps (crates/fixtures): their four GGUF headers, one after
the other, compressed into crates/fixtures/data/headers.zst, and, for each fixture, what
crates/fixtures/src/lib.rs pins (seed, header and file length, SHA-256, the fitted yes/no
head rows). Prints those values in the form of lib.rs's FIXTURES table; paste them there,
then `cargo test -p tessera-fixtures` must rebuild every file to its hash.

Needs the `gguf` and `numpy` packages (tools/requirements.txt) and the zstd command.
Usage (from the repository root): python3 tools/pack_fixtures.py
"""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# The order of the headers in headers.zst (and of lib.rs's FIXTURES).
STEMS = ["tiny-q8", "tiny-q8-untied", "tiny-f32", "tiny-embed-q8"]
YES_ID, NO_ID = 9693, 2152


def main():
    headers = bytearray()
    for stem in STEMS:
        path = FIXTURES / f"{stem}.gguf"
        data = path.read_bytes()
        reader = gguf.GGUFReader(path)
        header = data[: reader.data_offset]
        headers += header
        config = json.loads((FIXTURES / f"{stem}.json").read_text())["config"]
        rows = None
        if config.get("pooling_type") != int(gguf.PoolingType.LAST):
            head = "token_embd.weight" if config["tie_word_embeddings"] else "output.weight"
            t = next(t for t in reader.tensors if t.name == head)
            raw = np.asarray(t.data).view(np.uint8).reshape(int(t.shape[1]), -1)
            rows = [raw[YES_ID].tobytes().hex(), raw[NO_ID].tobytes().hex()]
        print(f"{stem}.gguf: seed {config['seed']}, header_len {len(header)}, file_len {len(data)}, "
              f"sha256 {hashlib.sha256(data).hexdigest()}")
        if rows:
            print(f"  head_rows yes {rows[0]}\n  head_rows no  {rows[1]}")
    out = ROOT / "crates" / "fixtures" / "data" / "headers.zst"
    subprocess.run(["zstd", "-q", "-f", "--ultra", "-22", "--long=25", "-o", str(out)],
                   input=bytes(headers), check=True)
    print(f"{out.relative_to(ROOT)}: {out.stat().st_size} bytes for {len(headers)} bytes of headers")


if __name__ == "__main__":
    sys.exit(main())
