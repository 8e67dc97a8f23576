"""A fully offline RAG pipeline: a VectorStoreIndex over a few documents, a local embedding model, the gateway as LLM.

    trt-gateway serve &        # the embedded engine with the demo model, on localhost:50051
    python integrations/llama-index/examples/offline_rag.py "How does the with statement release resources?"

Nothing is downloaded: the embedding is a hashed bag of words computed here, and LlamaIndex ships its tokenizer data.
The demo model is a tiny Llama trained on Python's documentation, so the answer has its flavour rather than its
accuracy; retrieval, which picks the document the answer is grounded in, is exact.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.query_engine import BaseQueryEngine

from llama_index.llms.trt_gateway import TrtGateway

DOCUMENTS = {
    "for": "The for statement iterates over the items of any sequence, such as a list or a string, in the order "
    "that they appear in the sequence. The range() function generates arithmetic progressions to loop over.",
    "with": "The with statement wraps the execution of a block with methods defined by a context manager. "
    "The context manager's __exit__ method releases resources, such as closing a file, even if the block raises.",
    "comprehensions": "List comprehensions provide a concise way to create lists from an expression followed by a "
    "for clause and zero or more if clauses, for example squares = [x**2 for x in range(10)].",
    "decorators": "A decorator is a function returning another function, applied with the @wrapper syntax. "
    "Common examples of decorators are classmethod() and staticmethod().",
}
_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_STOPWORDS = frozenset(
    "a an and any as by do does even from how i if in is it like of or such that the they to what".split()
)


class HashingEmbedding(BaseEmbedding):
    """A deterministic bag-of-words embedding: each word (lower-cased, a plural "s" dropped) is hashed into one of
    `dim` buckets, and the vector is L2-normalised, so cosine similarity measures shared vocabulary."""

    dim: int = 512

    @classmethod
    def class_name(cls) -> str:
        return "HashingEmbedding"

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            if word in _STOPWORDS:
                continue
            word = word[:-1] if len(word) > 3 and word.endswith("s") else word
            vec[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % self.dim] += 1
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)


def build_index() -> VectorStoreIndex:
    docs = [Document(text=text, metadata={"title": title}, doc_id=title) for title, text in DOCUMENTS.items()]
    return VectorStoreIndex.from_documents(docs, embed_model=HashingEmbedding())


def build_query_engine(llm: TrtGateway, *, streaming: bool = False) -> BaseQueryEngine:
    return build_index().as_query_engine(llm=llm, similarity_top_k=1, streaming=streaming)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="How does the with statement release resources?")
    parser.add_argument("--target", default="localhost:50051", help="the gateway's host:port")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    llm = TrtGateway(target=args.target, max_tokens=args.max_tokens, temperature=0)
    response = build_query_engine(llm, streaming=True).query(args.question)
    source = response.source_nodes[0]
    out.write(f"[retrieved: {source.node.metadata['title']} (score {source.score:.2f})]\n")
    for delta in response.response_gen:
        out.write(delta)
        out.flush()
    out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
