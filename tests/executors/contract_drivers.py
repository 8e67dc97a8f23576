"""One small driver per executor for the contract suite: how to configure it, what to set up around a test, and how
to make its engine die. Everything else the suite does through the `Executor` contract only.

Executors are built by name through the registry, so the suite does not depend on where their modules live. The
TensorRT-LLM and vLLM doubles come from tests/doubles.py: the `driver` fixture gives a test a freshly reset one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doubles import install, write_model

import trt_gateway
from trt_gateway.config import ExecutorConfig
from trt_gateway.executors.base import Executor

install("trtllm")
install("vllm")

MODEL = "contract-model"  # every executor serves its model under this name (served_name)
DEMO_TARGET = Path(trt_gateway.__file__).resolve().parent / "assets" / "demo" / "target"


class Driver:
    """The per-backend part of the contract suite. Subclasses override what differs."""

    name = ""  # the executor's name in the registry
    double = ""  # the double's name in tests/doubles.py, if the executor runs over one

    def config(self, tmp_path: Path) -> ExecutorConfig:
        raise NotImplementedError

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        """Set up and tear down whatever the backend needs around one test."""
        yield

    def kill(self, executor: Executor) -> None:
        """Make the engine fail for good at its next step, as a lost device or dead worker process would."""
        raise NotImplementedError


class EchoDriver(Driver):
    name = "echo"

    def config(self, tmp_path: Path) -> ExecutorConfig:
        return ExecutorConfig(name=self.name, served_name=MODEL)

    def kill(self, executor: Executor) -> None:
        executor.kill()  # type: ignore[attr-defined]  # the echo executor's own simulation


class NativeDriver(Driver):
    """The embedded engine on the committed demo model, on the CPU, greedy (requests set temperature 0)."""

    name = "native"

    def config(self, tmp_path: Path) -> ExecutorConfig:
        # One torch thread: the engine thread and the event loop share this machine's few cores, and more threads
        # than cores make every step an order of magnitude slower. No prefix cache: a cached prefix takes another
        # path through the kernels, and the suite compares outputs of the same prompt run twice.
        options = {"device": "cpu", "cpu_threads": 1, "max_num_seqs": 4, "enable_prefix_caching": False}
        return ExecutorConfig(name=self.name, model=str(DEMO_TARGET), served_name=MODEL, options=options)

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        import torch

        threads = torch.get_num_threads()  # cpu_threads is process-wide: give the other tests theirs back
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def kill(self, executor: Executor) -> None:
        engine = executor.front.engine  # type: ignore[attr-defined]  # AsyncEngine.engine: for tests

        def step() -> Any:
            raise RuntimeError("device lost")

        engine.step = step  # the engine thread's next step raises: fatal, as a real failed step is


class TrtllmDriver(Driver):
    name = double = "trtllm"

    def config(self, tmp_path: Path) -> ExecutorConfig:
        options = {"stats_interval_s": 0.01, "stats_timeout_s": 0.01}
        return ExecutorConfig(name=self.name, model=write_model(tmp_path / "m"), served_name=MODEL, options=options)

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        from tensorrt_llm import _fake

        _fake.CONTROL.step_delay_s = 0.001  # the double's engine would otherwise run a whole request at once
        yield

    def kill(self, executor: Executor) -> None:
        from tensorrt_llm import _fake
        from tensorrt_llm.executor import CppExecutorError

        _fake.CONTROL.fail_after_steps, _fake.CONTROL.step_error = 0, CppExecutorError("device lost")


class VllmDriver(Driver):
    name = double = "vllm"

    def config(self, tmp_path: Path) -> ExecutorConfig:
        return ExecutorConfig(name=self.name, model=write_model(tmp_path / "m"), served_name=MODEL,
                              options={"start_in_thread": False})

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        from vllm import _fake

        _fake.CONTROL.step_delay_s = 0.001  # the double's engine would otherwise run a whole request at once
        yield

    def kill(self, executor: Executor) -> None:
        from vllm import _fake

        _fake.CONTROL.fail_after_steps = 0  # the engine core dies at its next step (EngineDeadError)


DRIVERS: dict[str, Driver] = {d.name: d for d in (EchoDriver(), NativeDriver(), TrtllmDriver(), VllmDriver())}
