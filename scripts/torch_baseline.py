#!/usr/bin/env python3
"""The side-by-side baseline of scripts/gpu-check.sh: transformers' Qwen3Model in
bf16 with sdpa attention under torch.inference_mode, random weights of the
Qwen3-Reranker-4B shape, all pairs in one right-padded batch with an attention
mask; the last real token's hidden state (after the final norm) through a 2-row
(yes/no) head, never the full-vocabulary projection. Prints time per batch and
billed tokens/s (full pair lengths)."""
import argparse
import time

import torch
from transformers import Qwen3Config, Qwen3Model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=100)
    p.add_argument("--doc-tokens", type=int, default=256)
    p.add_argument("--query-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    config = Qwen3Config(
        vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1e6,
        rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3Model(config).to(torch.bfloat16).eval()
        head = torch.randn(2, config.hidden_size, dtype=torch.bfloat16) * 0.02
    length = a.query_tokens + a.doc_tokens
    ids = torch.randint(0, 151669, (a.docs, length), device="cuda")
    mask = torch.ones_like(ids)
    last = mask.sum(dim=1) - 1

    def step():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = hidden[torch.arange(a.docs, device="cuda"), last]
        return torch.softmax((rows @ head.T).float(), dim=-1)[:, 0]

    with torch.inference_mode():
        step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(a.reps):
            step()
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / a.reps
    tokens = a.docs * length
    print(f"torch {torch.__version__} bf16 sdpa, {torch.cuda.get_device_name()}: "
          f"{a.docs} pairs x {length} tokens: {seconds * 1e3:.1f} ms per batch, "
          f"{tokens / seconds:,.0f} billed tokens/s")


if __name__ == "__main__":
    main()
