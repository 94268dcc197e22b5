"""The product page's "End-to-end RAG snippet" (rerank API reference, "Pairing with
/v1/embeddings") run as published against one `tessera serve` hosting both models.
Only its two base URLs differ (taken from TESSERA_URL). What the snippet assumes
around it is defined here: `os`, `user_query`, and a `vector_store` whose
`query(vec, top_k)` is cosine top-k over a support-desk corpus it embedded through
the same server (documents go without an instruction).

Usage: TESSERA_URL=http://127.0.0.1:PORT TESSERA_API_KEY=KEY python two_stage_snippet.py
The server must run as openai_check.py says. The models are random: the checks are
about shapes and contracts, not relevance.
"""

import math
import os
import sys
from dataclasses import dataclass

from openai import OpenAI

CORPUS = [
    "To reset your password, click forgot password on the login screen.",
    "Password requirements: 12+ characters, one number, one symbol.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Refunds reach your card within five working days.",
    "You can change your email address under Settings, then Account.",
    "Two-factor authentication can be turned on in the Security tab.",
    "If you lose your phone, use a backup code to sign in.",
    "Invoices are emailed on the first day of every month.",
    "Download past invoices from Billing, then History.",
    "We accept Visa, Mastercard, American Express and PayPal.",
    "To cancel your subscription, open Billing and choose Cancel plan.",
    "A cancelled plan stays active until the end of the billing period.",
    "Upgrading your plan takes effect immediately and is prorated.",
    "Downgrades apply from the next billing cycle.",
    "Team admins can invite members from the People page.",
    "An invitation link expires after seven days.",
    "Removed members lose access at once; their files stay with the team.",
    "Shipping within the country takes two to four business days.",
    "International orders usually arrive within ten business days.",
    "Track your parcel with the link in your shipping confirmation email.",
    "Returns are free within 30 days of delivery.",
    "Print the return label from Orders, then Return an item.",
    "Damaged items are replaced at no cost; send us a photo.",
    "Gift cards cannot be exchanged for cash.",
    "A gift card balance never expires.",
    "The mobile app works on iOS 16 and Android 12 or newer.",
    "Clear the app cache if pages load slowly.",
    "Offline mode keeps your last 50 documents available without a connection.",
    "Notifications can be muted per project in Preferences.",
    "Export your data as CSV or JSON from Settings, then Privacy.",
    "Deleting your account removes your data after 30 days.",
    "We never sell personal data to third parties.",
    "Our status page lists current outages and maintenance windows.",
    "Scheduled maintenance happens on Sundays between 2 and 4 in the morning.",
    "API keys are created and revoked under Developer settings.",
    "The API allows 600 requests per minute per key.",
    "Webhooks retry failed deliveries for up to 24 hours.",
    "Single sign-on with SAML is available on the Enterprise plan.",
    "Audit logs are kept for one year on Enterprise accounts.",
    "Students get a 50 percent discount with a valid school email.",
    "Nonprofits can apply for a free Team plan.",
    "Live chat support is available during office hours.",
    "Email support answers within one business day.",
    "Phone support is included with the Enterprise plan.",
    "You can book a product demo from the Contact page.",
    "Browser extensions sometimes block the upload button; try a private window.",
    "Files larger than 2 GB must be uploaded with the desktop app.",
    "Shared links can be protected with a password and an expiry date.",
    "Version history keeps every change for 90 days.",
    "Restore a deleted file from the Trash within 30 days.",
    "Storage limits are 15 GB on Free and 1 TB on Pro.",
    "Buy extra storage in 100 GB blocks from Billing.",
    "Dark mode is under Preferences, then Appearance.",
    "The keyboard shortcut list opens with the question mark key.",
    "Change the interface language under Preferences, then Language.",
    "Time zones are taken from your browser unless you set one.",
    "Calendar sync supports Google Calendar and Outlook.",
    "Duplicate charges are refunded automatically within 48 hours.",
    "Contact billing support if a payment fails three times.",
    "Your receipt shows the last four digits of the card charged.",
]


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


@dataclass
class Candidate:
    text: str
    similarity: float


class InMemoryVectorStore:
    """Cosine top-k over documents embedded by the server, at the snippet's width."""

    def __init__(self, documents, dimensions):
        embedder = OpenAI(base_url=f"{os.environ['TESSERA_URL']}/v1", api_key=os.environ["TESSERA_API_KEY"])
        response = embedder.embeddings.create(model="Qwen/Qwen3-Embedding-8B", input=documents, dimensions=dimensions)
        self.documents = documents
        self.vectors = [d.embedding for d in response.data]

    def query(self, vec, top_k):
        def cosine(a, b):
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

        scored = [Candidate(text, cosine(vec, v)) for text, v in zip(self.documents, self.vectors)]
        return sorted(scored, key=lambda c: -c.similarity)[:top_k]


vector_store = InMemoryVectorStore(CORPUS, dimensions=1536)
user_query = "how do I reset my password"

# ---- the product page's snippet; only the two base URLs differ ----
from openai import OpenAI

client = OpenAI(
    base_url=f"{os.environ['TESSERA_URL']}/v1",
    api_key=os.environ["TESSERA_API_KEY"],
)

# Stage 1 — embed and retrieve top-50 from your vector store.
query_vec = client.embeddings.create(
    model="Qwen/Qwen3-Embedding-8B",
    input=[user_query],
    dimensions=1536,           # fits pgvector HNSW
).data[0].embedding
candidates = vector_store.query(query_vec, top_k=50)

# Stage 2 — rerank the 50 candidates and keep the top 10.
import httpx
resp = httpx.post(
    f"{os.environ['TESSERA_URL']}/v1/rerank",
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
# ---- end of the snippet ----

check(len(query_vec) == 1536, f"stage 1: query vector length {len(query_vec)}")
check(abs(math.sqrt(sum(x * x for x in query_vec)) - 1.0) <= 1e-5, "stage 1: unit query vector")
check(len(candidates) == 50, f"stage 1: {len(candidates)} candidates")
check(len({c.text for c in candidates}) == 50, "stage 1: distinct candidates")
similarities = [c.similarity for c in candidates]
check(all(a >= b for a, b in zip(similarities, similarities[1:])), "stage 1: candidates by similarity")
check(len(resp["results"]) == 50, f"stage 2: {len(resp['results'])} rerank results for 50 documents")
check(sorted(r["index"] for r in resp["results"]) == list(range(50)), "stage 2: every candidate scored once")
check(len(top10) == 10 and len(context) == 10, f"stage 2: kept {len(top10)}")
scores = [r["relevance_score"] for r in top10]
check(all(0.0 <= s <= 1.0 for s in scores), "stage 2: scores in [0, 1]")
check(all(a >= b for a, b in zip(scores, scores[1:])), "stage 2: scores descending")
check(all(0 <= r["index"] < len(candidates) for r in top10), "stage 2: indices valid")
check(all(text in CORPUS for text in context), "stage 2: context comes from the corpus")
check(resp["model"] == "Qwen/Qwen3-Reranker-4B", f"stage 2: model {resp['model']!r}")
print(f"two-stage snippet ok: {len(CORPUS)} documents → {len(candidates)} candidates → {len(context)} contexts;",
      f"top score {scores[0]:.6f}")
