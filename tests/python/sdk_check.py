"""The real clients against a running `tessera serve`: the cohere SDK's v1 and v2
clients, and the spec's httpx stage-2 snippet as published (only the URL differs).

Usage: TESSERA_URL=http://127.0.0.1:PORT TESSERA_API_KEY=KEY python sdk_check.py
The server must run with `--served-model-name Qwen/Qwen3-Reranker-4B --api-key KEY`.
"""

import os
import sys
from dataclasses import dataclass

import cohere
import httpx

BASE = os.environ["TESSERA_URL"].rstrip("/")
KEY = os.environ["TESSERA_API_KEY"]
MODEL = "Qwen/Qwen3-Reranker-4B"
QUERY = "how do I reset my password"
DOCS = [
    "To reset your password, click forgot password on the login screen.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Password requirements: 12+ characters, one number, one symbol.",
]


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def sorted_desc(scores):
    return all(a >= b for a, b in zip(scores, scores[1:]))


# cohere v1 client: POST /v1/rerank
v1 = cohere.Client(base_url=BASE, api_key=KEY)
r1 = v1.rerank(model=MODEL, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
check(len(r1.results) == 2, f"v1 top_n=2 gave {len(r1.results)} results")
check(sorted_desc([r.relevance_score for r in r1.results]), "v1 results sorted")
for r in r1.results:
    check(0.0 <= r.relevance_score <= 1.0, "v1 score in [0, 1]")
    check(r.document is not None and r.document.text == DOCS[r.index], "v1 document text")
check(r1.meta.api_version.version == "1", "v1 api_version")
check(r1.meta.billed_units.search_units == 1, "v1 search_units")
all_v1 = v1.rerank(model=MODEL, query=QUERY, documents=DOCS)
check(len(all_v1.results) == 3 and all(r.document is None for r in all_v1.results), "v1 default: no documents")
print("cohere.Client (v1) rerank ok:", [(r.index, round(r.relevance_score, 6)) for r in all_v1.results])

# Wrong key: the SDK's own error class.
try:
    cohere.Client(base_url=BASE, api_key="wrong").rerank(model=MODEL, query=QUERY, documents=DOCS)
    check(False, "a wrong key must be refused")
except cohere.errors.UnauthorizedError:
    pass

# cohere v2 client: POST /v2/rerank
v2 = cohere.ClientV2(base_url=BASE, api_key=KEY)
r2 = v2.rerank(model=MODEL, query=QUERY, documents=DOCS, top_n=3)
check(len(r2.results) == 3, "v2 results")
check([r.index for r in r2.results] == [r.index for r in all_v1.results], "v2 order equals v1")
for a, b in zip(r2.results, all_v1.results):
    check(abs(a.relevance_score - b.relevance_score) <= 1e-6, "v2 scores equal v1")
check(r2.meta.api_version.version == "2", "v2 api_version")
print("cohere.ClientV2 rerank ok:", [(r.index, round(r.relevance_score, 6)) for r in r2.results])


# The spec's stage 2, with its retrieval stage replaced by fixed candidates.
@dataclass
class Candidate:
    text: str


user_query = QUERY
candidates = [Candidate(d) for d in DOCS * 20]

# Stage 2 — rerank the 50 candidates and keep the top 10.
import httpx
resp = httpx.post(
    f"{BASE}/v1/rerank",
    headers={"Authorization": f"Bearer {os.environ['TESSERA_API_KEY']}"},
    json={
        "model": "Qwen/Qwen3-Reranker-4B",
        "query": user_query,
        "documents": [c.text for c in candidates],
    },
    timeout=30.0,
).json()
top10 = sorted(resp["results"], key=lambda r: -r["relevance_score"])[:10]
context = [candidates[r["index"]].text for r in top10]

check(len(context) == 10, "httpx snippet: ten contexts")
best = max(all_v1.results, key=lambda r: r.relevance_score)
check(context[0] == DOCS[best.index], "httpx snippet: best document first")
check(resp["meta"]["billed_units"]["search_units"] == 1, "60 documents: one search unit")
print("spec httpx snippet ok: top10 from", len(resp["results"]), "results")
print("sdk: 3 passed, 0 failed")
