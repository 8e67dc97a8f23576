"""The `vllm` executor: vLLM's v1 async engine behind the Executor contract (executor.py says how).

The entry point `trt_gateway.executors.vllm:VllmExecutor.from_config` names this package, so it re-exports the
executor class.
"""

from trt_gateway.executors.vllm.executor import VllmExecutor

__all__ = ["VllmExecutor"]
