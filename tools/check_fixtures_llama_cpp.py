#!/usr/bin/env python3
"""Optional cross-check of tests/fixtures/ against llama.cpp itself (through llama-cpp-python).

Checks that llama.cpp loads each tiny GGUF, that its tokenizer gives the reference ids for every
reranker pair and for every tokenizer case except the ones NFC changes, and how close its scores
(logits of "yes"/"no" at the last position, f32 KV cache, no flash attention) come to the three
reference variants; for the models with cls.output.weight it also runs RANK pooling.

  python3 -m venv /tmp/llamacpp && /tmp/llamacpp/bin/pip install llama-cpp-python==0.3.36 numpy
  /tmp/llamacpp/bin/python tools/check_fixtures_llama_cpp.py
(llama-cpp-python builds llama.cpp from source: about half an hour on 2 cores.)

llama.cpp's CPU path quantises activations with round-half-to-even for Q8_0 weights (the
reference uses ggml's quantize_row_q8_0_ref, halves away from zero) and rounds activations to
F16/BF16 for F16/BF16 weights, so it is expected to sit within a few 1e-3 of w8a8, not to match it.
"""
import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import llama_cpp as L

FIX = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet(level, text, user_data):
    pass


def tokenize(vocab, text: str) -> list[int]:
    b = text.encode("utf-8")
    n_max = len(b) + 16
    arr = (L.llama_token * n_max)()
    n = L.llama_tokenize(vocab, b, len(b), arr, n_max, False, True)   # no BOS, parse special
    assert n >= 0, n
    return list(arr[:n])


def context(model, rank: bool):
    cp = L.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 1024
    cp.n_threads = cp.n_threads_batch = 1
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cp.type_k = cp.type_v = 0            # GGML_TYPE_F32
    cp.embeddings = rank
    if rank:
        cp.pooling_type = L.LLAMA_POOLING_TYPE_RANK
    return L.llama_init_from_model(model, cp)


def decode(ctx, ids):
    arr = (L.llama_token * len(ids))(*ids)
    assert L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids))) == 0


def main() -> int:
    L.llama_log_set(_quiet, None)
    L.llama_backend_init()
    tok_cases = json.loads((FIX / "tokenizer_cases.json").read_text(encoding="utf-8"))["cases"]
    failed = False
    for stem in ("tiny-q8", "tiny-q8-untied", "tiny-f32"):
        ref = json.loads((FIX / f"{stem}.json").read_text(encoding="utf-8"))
        model = L.llama_model_load_from_file(str(FIX / f"{stem}.gguf").encode(), L.llama_model_default_params())
        assert model, stem
        vocab = L.llama_model_get_vocab(model)
        n_cls = L.llama_model_n_cls_out(model)
        labels = [L.llama_model_cls_label(model, i) for i in range(n_cls)]
        print(f"{stem}: loaded, n_cls_out {n_cls}, labels {labels}")

        bad = [c["name"] for c in tok_cases if tokenize(vocab, c["text"]) != c["ids"]]
        expected_bad = [c["name"] for c in tok_cases if c["nfc_changes"]]
        print(f"  tokenizer cases differing: {bad} (NFC-changed cases: {expected_bad})")
        failed |= bad != expected_bad

        diffs = {v: [] for v in ("fp32", "w8a32", "w8a8")}
        rank_diffs = []
        for case in ref["cases"]:
            instr = case["instruction"] or ref["default_instruction"]
            for doc, p in zip(case["documents"], case["pairs"]):
                text = ref["prefix"] + f"<Instruct>: {instr}\n<Query>: {case['query']}\n<Document>: {doc}" + ref["suffix"]
                if tokenize(vocab, text) != p["ids"]:
                    print(f"  token ids differ for document {doc!r}")
                    failed = True
                ctx = context(model, rank=False)
                decode(ctx, p["ids"])
                lg = L.llama_get_logits_ith(ctx, -1)
                score = 1.0 / (1.0 + np.exp(-(lg[ref["yes_id"]] - lg[ref["no_id"]])))
                L.llama_free(ctx)
                for v in diffs:
                    diffs[v].append(abs(score - p[v]))
                if n_cls == 2:
                    ctx = context(model, rank=True)
                    decode(ctx, p["ids"])
                    e = L.llama_get_embeddings_seq(ctx, 0)
                    rank_diffs.append(abs(e[0] - score))
                    L.llama_free(ctx)
        for v, x in diffs.items():
            print(f"  |llama.cpp - {v}|: max {max(x):.2e}, mean {np.mean(x):.2e}")
        if rank_diffs:
            print(f"  RANK pooling p(yes) vs its own logits: max {max(rank_diffs):.2e}")
        L.llama_model_free(model)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
