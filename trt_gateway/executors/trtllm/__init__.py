"""The `trtllm` executor: TensorRT-LLM's `LLM` API behind the Executor contract (executor.py says how).

The entry point `trt_gateway.executors.trtllm:TrtllmExecutor.from_config` names this package, so it re-exports the
executor class.
"""

from trt_gateway.executors.trtllm.executor import TrtllmExecutor

__all__ = ["TrtllmExecutor"]
