"""An LCEL chain that streams: prompt | ChatTrtGateway | StrOutputParser, printing tokens as they arrive.

    trt-gateway serve &        # the embedded engine with the demo model, on localhost:50051
    python integrations/langchain/examples/lcel_streaming.py "the for statement"

The demo model is a tiny Llama trained on Python's documentation: expect its flavour, not good answers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

from langchain_trt_gateway import ChatTrtGateway


def build_chain(llm: ChatTrtGateway) -> Runnable[dict[str, str], str]:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You answer questions about Python in one short paragraph."),
            ("human", "Explain {topic}."),
        ]
    )
    return prompt | llm | StrOutputParser()


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", nargs="?", default="the for statement")
    parser.add_argument("--target", default="localhost:50051", help="the gateway's host:port")
    parser.add_argument("--model", default="", help="served model name (default: the server's default)")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    llm = ChatTrtGateway(target=args.target, model=args.model, max_tokens=args.max_tokens, temperature=0)
    for piece in build_chain(llm).stream({"topic": args.topic}):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
