"""The tiny Qwen3 embedding fixture: tests/fixtures/tiny-embed-q8.gguf and its reference vectors
tests/fixtures/tiny-embed-q8.json. Built by make_fixtures.py (run that, not this module).

The model is written the way llama.cpp's convert_hf_to_gguf.py converts Qwen3-Embedding-0.6B:
architecture qwen3, `qwen3.pooling_type = 3` (LAST, from the checkpoint's sentence-transformers
Pooling module), no cls.output.weight and no rerank metadata, tied embeddings, the vocabulary
unpadded (config.json's vocab_size 151,669), context length 32,768, and the tokenizer.json
post-processor that appends <|endoftext|>, which the gguf package turns into
`eos_token_id = 151643`, `add_eos_token = true` (and <|im_end|> into `eot_token_id`).

The references follow the official Qwen3-Embedding recipe with Hugging Face transformers:
AutoModel (Qwen3Model, float32, eager attention), the text tokenised whole by the tokenizer
(whose post-processor appends <|endoftext|>), a query written as
"Instruct: {instruction}\\nQuery:{text}", last-token pooling of last_hidden_state (which is
after the final norm) and F.normalize. Each text runs alone (no padding).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import gguf
from transformers import AutoModel, AutoTokenizer

import make_fixtures as mf

QUERY_FORMAT = "Instruct: {instruction}\nQuery:{text}"
EMBED_VOCAB_ROWS = 151669        # Qwen3-Embedding-0.6B config.json vocab_size (no padding rows)
EMBED_CONTEXT_LENGTH = 32768     # its max_position_embeddings
COLON_D_ID = 63843               # ":D": the instruction's final ':' merged with "Dove"

SPEC = mf.Spec("tiny-embed-q8", "Tessera Tiny Qwen3 Embedding Q8_0", hidden=32, layers=2, heads=8,
               kv_heads=2, head_dim=16, ffn=96, tied=True, cls=False, q8=True,
               seeds=list(range(4000, 4040)), kind="embedding", vocab_rows=EMBED_VOCAB_ROWS,
               context_length=EMBED_CONTEXT_LENGTH)

# (name, instruction, text): instruction None embeds the text as it is (a document).
CASES = [
    ("doc_password", None, "To reset your password, click forgot password on the login screen."),
    ("doc_office_hours", None, "Our office hours are Monday to Friday, 9 to 18."),
    ("doc_egg", None, "Boil the egg for six minutes, then cool it in ice water."),
    ("doc_long", None, mf.LONG_DOC),
    ("doc_text", None, "end of text"),
    ("doc_text_then_end_of_text", None, "end of text<|endoftext|>"),
    ("doc_empty", None, ""),
    ("doc_non_ascii", None, "要重置密码，请在登录页面点击“忘记密码”。Größe: 東京 🔑🇯🇵"),
    ("query_password", mf.DEFAULT_INSTRUCTION, "how do I reset my password"),
    ("query_egg", mf.DEFAULT_INSTRUCTION, "How long should I boil an egg for a runny yolk?"),
    ("query_rome_it", mf.DEFAULT_INSTRUCTION, "Dove si trova Roma?"),
    ("query_custom_instruction", "Given a cooking question, retrieve recipe steps that answer it",
     "How long should I boil an egg for a runny yolk?"),
]

# Acceptance of a seed (tiny random models are touchy; see pick_seed).
MAX_W8A8_FLIP = 1e-5       # an independent W8A8 forward may move a component by at most this
MAX_CASE_COSINE = 0.95     # two different inputs' vectors must differ at least this much
MIN_VARIANT_COSINE = 0.99  # fp32 and w8a8 stay this close to w8a32


# --------------------------------------------------------------------------------------
# Tokenizer: Qwen3-Embedding's files
# --------------------------------------------------------------------------------------
def build_tokenizer(base_dir: Path, scratch: Path) -> Path:
    """The reranker fixtures' tokenizer directory as Qwen3-Embedding-0.6B ships it: tokenizer.json's
    post-processor also appends <|endoftext|> (TemplateProcessing after ByteLevel), config.json
    is the embedding model's, and the sentence-transformers modules name last-token pooling."""
    out = scratch / "hf-tokenizer-embed"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base_dir, out)
    tj_path = out / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    eot = "<|endoftext|>"
    assert tj["post_processor"]["type"] == "ByteLevel", tj["post_processor"]
    tj["post_processor"] = {"type": "Sequence", "processors": [tj["post_processor"], {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eot, "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eot, "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": eot, "type_id": 1}}],
        "special_tokens": {eot: {"id": eot, "ids": [mf.END_OF_TEXT_ID], "tokens": [eot]}},
    }]}
    tj_path.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    (out / "config.json").write_text(json.dumps(
        {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "bos_token_id": mf.BOS_ID,
         "eos_token_id": mf.END_OF_TEXT_ID, "tie_word_embeddings": True,
         "max_position_embeddings": EMBED_CONTEXT_LENGTH, "vocab_size": EMBED_VOCAB_ROWS}, indent=2))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": SPEC.hidden, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
         "pooling_mode_lasttoken": True, "include_prompt": True}, indent=2))
    return out


class EmbedTok(mf.Tok):
    """The embedding tokenizer; `ids` is what the official recipe feeds the model."""

    def ids(self, text: str, base: mf.Tok) -> list[int]:
        ids = list(self.hf(text)["input_ids"])                 # post-processor appends <|endoftext|>
        assert ids == self.raw.encode(text).ids, text
        assert ids == base.encode(text) + [mf.END_OF_TEXT_ID], (text, ids)
        return ids


def case_text(instruction: str | None, text: str) -> str:
    return text if instruction is None else QUERY_FORMAT.format(instruction=instruction, text=text)


# --------------------------------------------------------------------------------------
# Reference vectors
# --------------------------------------------------------------------------------------
class EmbedModel:
    def __init__(self, spec: mf.Spec):
        self.spec = spec
        torch.manual_seed(0)
        self.model = AutoModel.from_config(mf.hf_config(spec), attn_implementation="eager").eval()
        assert type(self.model).__name__ == "Qwen3Model", type(self.model)
        assert self.model.config._attn_implementation == "eager"

    def load(self, tensors: dict[str, np.ndarray]):
        sd = {k.removeprefix("model."): torch.from_numpy(np.ascontiguousarray(v))
              for k, v in tensors.items() if not k.startswith("_")}
        self.model.load_state_dict(sd, strict=True)

    @torch.no_grad()
    def embed(self, ids: list[int], act_quant: bool) -> np.ndarray:
        hooks = mf.act_quant_hooks(self.model.layers, self.spec.layers) if act_quant else []
        try:
            input_ids = torch.tensor([ids], dtype=torch.long)
            mask = torch.ones_like(input_ids)
            out = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        pooled = out.last_hidden_state[:, -1]         # the recipe's last_token_pool, no padding
        return F.normalize(pooled.to(torch.float32), p=2, dim=1)[0].numpy()


def unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64).reshape(-1)
    return x / np.linalg.norm(x)


def embed_all(spec: mf.Spec, w: dict[str, np.ndarray], model: EmbedModel, ids: list[list[int]]):
    deq, _ = mf.stored_values(spec, w)
    out = {}
    for vname, tensors, aq in (("fp32", w, False), ("w8a32", deq, False), ("w8a8", deq, True)):
        model.load(tensors)
        out[vname] = np.stack([model.embed(x, aq) for x in ids])
    return out


def seed_problems(spec: mf.Spec, w, vecs: dict[str, np.ndarray], ids: list[list[int]]) -> list[str]:
    """Why the vectors of this seed make a poor reference (empty: they are fine)."""
    problems = []
    # The W8A8 reference must not hinge on single rounding flips: an independent forward
    # (different summation order, so different ties) has to agree closely.
    mem = mf.memory_tensors(spec, w)
    for v, aq, tol in (("w8a32", False, 1e-5), ("w8a8", True, MAX_W8A8_FLIP)):
        got = np.stack([unit(h) for h in mf.numpy_last_hidden(mem, ids, aq)])
        d = float(np.abs(got - vecs[v]).max())
        print(f"    numpy forward vs transformers {v}: max |diff| {d:.2e}")
        if d > tol:
            problems.append(f"{v}: an independent forward moves a component by {d:.2e}")
    ref = vecs["w8a32"].astype(np.float64)
    cos = ref @ ref.T
    texts = [case_text(i, t) for _, i, t in CASES]
    worst = max(cos[a, b] for a in range(len(ref)) for b in range(a) if texts[a] != texts[b])
    print(f"    largest cosine between different inputs {worst:.4f}")
    if worst > MAX_CASE_COSINE:
        problems.append(f"two inputs' vectors have cosine {worst:.4f}")
    for v in ("fp32", "w8a8"):
        c = float(np.min(np.sum(vecs[v].astype(np.float64) * ref, axis=1)))
        print(f"    smallest cosine {v} vs w8a32 {c:.5f}")
        if c < MIN_VARIANT_COSINE:
            problems.append(f"{v} vs w8a32 cosine {c:.5f}")
    return problems


def check_file(path: Path, vocab) -> None:
    """The converter's embedding metadata, read back."""
    r = gguf.GGUFReader(str(path))

    def field(key):
        return r.fields[key].contents() if key in r.fields else None

    assert field("qwen3.pooling_type") == int(gguf.PoolingType.LAST)
    assert field("qwen3.context_length") == EMBED_CONTEXT_LENGTH
    assert field("qwen3.classifier.output_labels") is None
    assert field("tokenizer.chat_template.rerank") is None and field("tokenizer.chat_templates") is None
    assert field("tokenizer.ggml.eos_token_id") == mf.END_OF_TEXT_ID
    assert field("tokenizer.ggml.eot_token_id") == mf.EOS_ID
    assert field("tokenizer.ggml.add_eos_token") is True
    assert field("tokenizer.ggml.add_bos_token") is False
    assert len(vocab[0]) == EMBED_VOCAB_ROWS and gguf.TokenType.UNUSED not in vocab[1]
    assert vocab[0][mf.END_OF_TEXT_ID] == "<|endoftext|>"
    assert not [t for t in r.tensors if t.name.startswith(("cls.", "output."))]


def make(base_tok: mf.Tok, scratch: Path, out_dir: Path) -> dict:
    spec = SPEC
    tok = EmbedTok(build_tokenizer(base_tok.dir, scratch))
    vocab = mf.gguf_vocab(tok, EMBED_VOCAB_ROWS)
    cases = []
    for name, instruction, text in CASES:
        ids = tok.ids(case_text(instruction, text), base_tok)
        cases.append({"name": name, "text": text, "instruction": instruction, "ids": ids})
    by_name = {c["name"]: c for c in cases}
    assert COLON_D_ID in by_name["query_rome_it"]["ids"]
    assert tok.hf.convert_ids_to_tokens(COLON_D_ID) == ":D"
    assert by_name["doc_text_then_end_of_text"]["ids"][-2:] == [mf.END_OF_TEXT_ID] * 2
    assert by_name["doc_text_then_end_of_text"]["ids"][:-1] == by_name["doc_text"]["ids"]
    assert by_name["doc_empty"]["ids"] == [mf.END_OF_TEXT_ID]
    ids = [c["ids"] for c in cases]

    model = EmbedModel(spec)
    for seed in spec.seeds:
        w = mf.random_weights(spec, seed)
        print(f"  {spec.stem}: seed {seed}")
        vecs = embed_all(spec, w, model, ids)
        problems = seed_problems(spec, w, vecs, ids)
        print(f"  {spec.stem}: seed {seed}: {'; '.join(problems) or 'ok'}")
        if not problems:
            break
    else:
        raise SystemExit(f"{spec.stem}: no seed gave a usable reference")

    path = out_dir / f"{spec.stem}.gguf"
    types = mf.write_gguf(path, spec, w, tok, vocab)
    deq, _ = mf.stored_values(spec, w)
    mf.check_gguf(path, spec, deq, vocab)
    check_file(path, vocab)
    from_file = mf.gguf_file_tensors(path)
    for v, aq, tol in (("w8a32", False, 1e-5), ("w8a8", True, MAX_W8A8_FLIP)):
        got = np.stack([unit(h) for h in mf.numpy_last_hidden(from_file, ids, aq)])
        d = float(np.abs(got - vecs[v]).max())
        print(f"  {spec.stem}: numpy forward from the file vs transformers {v}: max |diff| {d:.2e}")
        assert d <= tol, (v, d)

    for i, c in enumerate(cases):
        for v in ("fp32", "w8a32", "w8a8"):
            c[v] = [float(x) for x in vecs[v][i]]
    config = {
        "architecture": "qwen3",
        "vocab_size": spec.vocab_rows,
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "intermediate_size": spec.ffn,
        "tie_word_embeddings": spec.tied,
        "has_cls_output": False,
        "pooling_type": int(gguf.PoolingType.LAST),
        "rope_theta": mf.ROPE_THETA,
        "rms_norm_eps": mf.RMS_EPS,
        "context_length": spec.context_length,
        "file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0),
        "alignment": 32,
        "tensor_types": dict(sorted(types.items())),
        "seed": seed,
        "init": {"emb_std": spec.emb_std, "lin_std": spec.lin_std,
                 "norm_weights": "uniform(0.7,1.3); q/k norm uniform(0.8,1.6)"},
    }
    doc = {
        "model": path.name,
        "config": config,
        "end_of_text_id": mf.END_OF_TEXT_ID,
        "default_instruction": mf.DEFAULT_INSTRUCTION,
        "query_format": QUERY_FORMAT,
        "variants": {
            "fp32": "float32 forward with the unquantised weights",
            "w8a32": "every Q8_0 tensor dequantised (q*f16(d)), float32 activations",
            "w8a8": "as w8a32, and the input of every Q8_0 matmul (q,k,v,o,gate,up,down) quantised "
                    "per row with ggml quantize_row_q8_0_ref and dequantised; the pooled final-norm "
                    "state is not quantised",
        },
        "cases": cases,
    }
    jpath = out_dir / f"{spec.stem}.json"
    jpath.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return {"gguf": path, "json": jpath, "seed": seed, "vectors": vecs}
