"""The `vllm` executor: vLLM's v1 `AsyncLLM` behind the Executor contract (executor.py has the numbered steps).

Modules by role: `options` (the options schema), `api` (finding vLLM, feature detection, AsyncEngineArgs), `params`
(request -> SamplingParams), `stream` (outputs -> deltas, abort), `lora` (adapters), `stats` (engine-stats
gauges), `executor` (the Executor).
"""

from trt_gateway.executors.vllm.executor import VllmExecutor

__all__ = ["VllmExecutor"]
