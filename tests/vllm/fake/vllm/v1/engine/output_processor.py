"""`vllm.v1.engine.output_processor.RequestOutputCollector`: one per request; a lagging consumer gets merged outputs."""

from __future__ import annotations

import asyncio
from typing import Any

from vllm.sampling_params import RequestOutputKind


class RequestOutputCollector:
    def __init__(self, output_kind: RequestOutputKind, request_id: str) -> None:
        self.aggregate = output_kind == RequestOutputKind.DELTA
        self.request_id = request_id  # the internal id
        self.output: Any = None
        self.ready = asyncio.Event()

    def put(self, output: Any) -> None:
        if self.output is None or isinstance(output, Exception):
            self.output = output
            self.ready.set()
        elif not isinstance(self.output, Exception):
            self.output.add(output, aggregate=self.aggregate)

    async def get(self) -> Any:
        while (output := self.output) is None:
            await self.ready.wait()
        self.output = None
        self.ready.clear()
        if isinstance(output, Exception):
            raise output
        return output

    def get_nowait(self) -> Any:
        output = self.output
        if output is not None:
            self.output = None
            self.ready.clear()
        if isinstance(output, Exception):
            raise output
        return output

    def close(self) -> None:
        pass
