"""The `trtllm` executor: TensorRT-LLM's `LLM` API behind the Executor contract (executor.py has the numbered steps).

Modules by role: `options` (the options schema), `api` (finding TensorRT-LLM, LLM kwargs), `params` (request ->
SamplingParams), `stream` (outputs -> deltas), `stats` (iteration-stats gauges), `executor` (the Executor).
"""

from trt_gateway.executors.trtllm.executor import TrtllmExecutor

__all__ = ["TrtllmExecutor"]
