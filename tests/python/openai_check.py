"""The real OpenAI Python SDK against `tessera serve`'s /v1/embeddings and /v1/models.

Usage: TESSERA_URL=http://127.0.0.1:PORT TESSERA_API_KEY=KEY python openai_check.py
The server must host an embedding model at least 1,537 wide (a random one does:
`tessera generate --shape 4b --layers 1 --kind embedding`) beside the reranker, with
`--served-model-name Qwen/Qwen3-Reranker-4B
 --embedding-served-model-name Qwen/Qwen3-Embedding-8B --api-key KEY`.
The models are random: the checks are about shapes and contracts, not relevance.
"""

import asyncio
import base64
import math
import os
import struct
import sys

import httpx
import openai
from openai import AsyncOpenAI, OpenAI

BASE = os.environ["TESSERA_URL"].rstrip("/")
KEY = os.environ["TESSERA_API_KEY"]
EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-8B"
RERANKER_MODEL = "Qwen/Qwen3-Reranker-4B"
TEXTS = [
    "To reset your password, click forgot password on the login screen.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Refunds reach your card within five working days.",
]
TASK = "Given a support question, retrieve the help article that answers it"

checks = 0


def check(condition, message):
    global checks
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def floats_of(b64):
    """OpenAI's base64 encoding: the vector's little-endian f32 bytes."""
    raw = base64.b64decode(b64, validate=True)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def expect_error(error_class, call, what):
    """Runs `call`, which must raise `error_class`; returns the error."""
    try:
        call()
    except error_class as e:
        return e
    except openai.APIStatusError as e:
        check(False, f"{what}: {type(e).__name__} ({e.status_code}) instead of {error_class.__name__}: {e}")
    check(False, f"{what}: no error, expected {error_class.__name__}")


# The SDK's retries would only hide a failing status; none of these should need one.
client = OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0)

# Floats, one per input, in input order.
floats = client.embeddings.create(
    model=EMBEDDING_MODEL, input=TEXTS, encoding_format="float", user="sdk-check"
)
check(floats.object == "list", "response object is 'list'")
check(floats.model == EMBEDDING_MODEL, f"response model {floats.model!r}")
check([d.index for d in floats.data] == list(range(len(TEXTS))), "one vector per input, indices in order")
vectors = [d.embedding for d in floats.data]
width = len(vectors[0])
check(width > 1536, f"width {width}: dimensions=1536 must be a real cut")
for i, v in enumerate(vectors):
    check(all(isinstance(x, float) for x in v), f"vector {i}: floats")
    check(len(v) == width, f"vector {i}: width {len(v)}, not {width}")
    check(abs(norm(v) - 1.0) <= 1e-5, f"vector {i}: norm {norm(v)}, not 1")
check(floats.usage.prompt_tokens > 0, "usage.prompt_tokens > 0")
check(floats.usage.total_tokens == floats.usage.prompt_tokens, "usage.total_tokens == prompt_tokens")
for i, text in enumerate(TEXTS):
    alone = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
    check(len(alone.data) == 1 and alone.data[0].index == 0, f"input {i} alone: one vector")
    check(max_diff(alone.data[0].embedding, vectors[i]) <= 1e-5, f"input {i}: vector in the batch is input {i}'s")
check(max_diff(vectors[0], vectors[1]) > 1e-3, "different inputs, different vectors")
print(f"float: {len(TEXTS)} unit vectors of width {width}, in input order, {floats.usage.prompt_tokens} prompt tokens")

# Without encoding_format the SDK itself asks for base64 and decodes the vectors.
raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=TEXTS)
wire = raw.http_response.json()
check(all(isinstance(d["embedding"], str) for d in wire["data"]), "SDK default: base64 strings on the wire")
decoded = raw.parse()
for i, d in enumerate(decoded.data):
    check(isinstance(d.embedding, list) and len(d.embedding) == width, f"SDK default: vector {i} decoded")
    check(max_diff(d.embedding, vectors[i]) <= 1e-6, f"SDK default: vector {i} equals the float one")
check(decoded.usage.prompt_tokens == floats.usage.prompt_tokens, "SDK default: same usage")

# An explicit encoding_format="base64": the SDK hands back the wire strings.
explicit = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, encoding_format="base64")
for i, d in enumerate(explicit.data):
    check(isinstance(d.embedding, str), f"explicit base64: vector {i} is a string")
    check(max_diff(floats_of(d.embedding), vectors[i]) <= 1e-6, f"explicit base64: vector {i} equals the float one")
print("base64: the SDK's default (decoded by the SDK) and explicit base64 equal the floats")

# dimensions: the first N components, renormalised.
for fmt in ("float", None):
    options = {"encoding_format": fmt} if fmt else {}
    cut = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, dimensions=1536, **options)
    for i, d in enumerate(cut.data):
        head = vectors[i][:1536]
        expected = [x / norm(head) for x in head]
        check(len(d.embedding) == 1536, f"dimensions=1536 ({fmt or 'SDK default'}): length {len(d.embedding)}")
        check(abs(norm(d.embedding) - 1.0) <= 1e-5, f"dimensions=1536: vector {i} unit length")
        check(max_diff(d.embedding, expected) <= 1e-5, f"dimensions=1536: vector {i} is the renormalised head")
full = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0], dimensions=width, encoding_format="float")
check(max_diff(full.data[0].embedding, vectors[0]) <= 1e-6, "dimensions=width is the full vector")
print("dimensions: 1536 is the renormalised head, width is the whole vector")

# Token ids: the text's own tokens give the text's vector; the server adds the
# end-of-text token (counted in usage). /tokenize is the reranker's tokenizer: both
# models carry the Qwen3 vocabulary.
tokens = httpx.post(
    f"{BASE}/tokenize",
    headers={"Authorization": f"Bearer {KEY}"},
    json={"inputs": TEXTS[:2]},
    timeout=30.0,
)
tokens.raise_for_status()
ids = [[t["id"] for t in text] for text in tokens.json()]
by_ids = client.embeddings.create(model=EMBEDDING_MODEL, input=ids, encoding_format="float")
check(len(by_ids.data) == 2, "token ids: one vector per array of ids")
for i, d in enumerate(by_ids.data):
    check(max_diff(d.embedding, vectors[i]) <= 1e-6, f"token ids: input {i}'s ids give its text's vector")
check(by_ids.usage.prompt_tokens == len(ids[0]) + len(ids[1]) + 2, "token ids: usage counts ids + end-of-text")
one = client.embeddings.create(model=EMBEDDING_MODEL, input=ids[0], encoding_format="float")
check(len(one.data) == 1 and max_diff(one.data[0].embedding, vectors[0]) <= 1e-6, "a flat array of ids is one input")
print(f"token ids: {[len(i) for i in ids]} ids give the texts' vectors")

# The `instruction` extension embeds a query as `Instruct: {task}\nQuery:{text}`.
plain_query = client.embeddings.create(model=EMBEDDING_MODEL, input="how do I reset my password", encoding_format="float")
instructed = client.embeddings.create(
    model=EMBEDDING_MODEL,
    input="how do I reset my password",
    encoding_format="float",
    extra_body={"instruction": TASK},
)
by_hand = client.embeddings.create(
    model=EMBEDDING_MODEL,
    input=f"Instruct: {TASK}\nQuery:how do I reset my password",
    encoding_format="float",
)
q, iq = plain_query.data[0].embedding, instructed.data[0].embedding
check(max_diff(q, iq) > 1e-3, "instruction changes the vector")
check(abs(norm(iq) - 1.0) <= 1e-5, "instructed vector unit length")
check(max_diff(iq, by_hand.data[0].embedding) <= 1e-6, "instruction is the documented template")
check(instructed.usage.prompt_tokens > plain_query.usage.prompt_tokens, "instruction tokens are counted")
print("instruction: extra_body changes the vector, as the template by hand")

# Concurrent requests from the async client, batched together server-side, each
# get their own input's vector.
async def concurrent():
    async with AsyncOpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0) as aclient:
        calls = [
            aclient.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[i % len(TEXTS)], encoding_format="float")
            for i in range(12)
        ]
        return await asyncio.gather(*calls)


for i, r in enumerate(asyncio.run(concurrent())):
    check(max_diff(r.data[0].embedding, vectors[i % len(TEXTS)]) <= 1e-5, f"concurrent request {i}: its input's vector")
print("AsyncOpenAI: 12 concurrent requests each got their input's vector")

# Errors, as the SDK's own classes.
for bad in (0, width + 1):
    e = expect_error(
        openai.BadRequestError,
        lambda: client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0], dimensions=bad),
        f"dimensions={bad}",
    )
    check(e.status_code == 400, f"dimensions={bad}: status {e.status_code}")
    check(e.param == "dimensions" and e.body["param"] == "dimensions", f"dimensions={bad}: param {e.param!r}")
    check(e.response.json()["error"]["param"] == "dimensions", f"dimensions={bad}: wire error.param")
    check(e.type == "invalid_request_error", f"dimensions={bad}: type {e.type!r}")
wrong_key = OpenAI(base_url=f"{BASE}/v1", api_key="wrong", max_retries=0)
e = expect_error(
    openai.AuthenticationError,
    lambda: wrong_key.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0]),
    "wrong key",
)
check(e.code == "invalid_api_key" and e.type == "authentication_error", f"wrong key: code {e.code!r}, type {e.type!r}")
expect_error(openai.AuthenticationError, lambda: wrong_key.models.list(), "wrong key on /v1/models")
e = expect_error(
    openai.NotFoundError,
    lambda: client.embeddings.create(model="text-embedding-3-small", input=TEXTS[0]),
    "unknown model",
)
check(e.param == "model" and e.code == "model_not_found", f"unknown model: param {e.param!r}, code {e.code!r}")
print("errors: dimensions 0 and width+1 → BadRequestError(param=dimensions), wrong key → "
      "AuthenticationError, unknown model → NotFoundError(model_not_found)")

# /v1/models lists both models; `kind` is an extra field the SDK keeps.
models = client.models.list()
kinds = {m.id: (m.model_extra or {}).get("kind") for m in models.data}
check(kinds.get(RERANKER_MODEL) == "reranker", f"models: {RERANKER_MODEL} kind {kinds.get(RERANKER_MODEL)!r}")
check(kinds.get(EMBEDDING_MODEL) == "embedding", f"models: {EMBEDDING_MODEL} kind {kinds.get(EMBEDDING_MODEL)!r}")
check(all(m.object == "model" and m.to_dict().get("kind") for m in models.data), "models: every card has a kind")
print("models.list:", kinds)
print(f"openai: {checks} checks passed")
