"""The adapter registry of executors whose engine has no adapter lifecycle of its own (trtllm, vllm):
name -> (stable int id, path, rank, alpha, modules).

Such an engine names an adapter per request by (name, int id, path) (TensorRT-LLM's and vLLM's `LoRARequest`) and
loads and evicts weights by id in its own caches. So the gateway's registry is the source of truth for
Load/Unload/List, and two rules keep those caches correct:
- an id is never reused: the same id must always mean the same weights, and an evicted-then-reloaded name may point
  at new files, so every Load of a new (name, path) gets a fresh id;
- the path is validated (directory, adapter_config.json, weights, rank, target modules) at Load, because the
  engines' own errors about bad adapters come late and vague.

Residency is reported honestly: an adapter in use by a running request is on the GPU; otherwise the gateway cannot
see whether the engine still caches it, so it reports DISK ("registered; loaded on use"), or what a subclass that
knows more says (vllm/lora.py: CPU once vLLM loaded it ahead of use).

A request holds its adapter through `pinned(...)` from submission to its end, so that Unload refuses it meanwhile.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_gateway import adapter_files, errors
from trt_gateway.types import AdapterInfo, Residency

log = logging.getLogger(__name__)
CONFIG_FILE = "adapter_config.json"
MAX_CONFIG_BYTES = 1 << 20
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class Adapter:
    name: str
    path: str
    int_id: int
    rank: int
    alpha: float
    target_modules: tuple[str, ...]  # HF module names, as in adapter_config.json

    def lora_request(self, cls: Any) -> Any:
        """The engine's `LoRARequest` for this adapter (TensorRT-LLM's and vLLM's take the same keywords). Its own
        checks (the path exists, the id is positive) failing mean this adapter cannot be served any more."""
        try:
            return cls(lora_name=self.name, lora_int_id=self.int_id, lora_path=self.path)
        except (ValueError, AssertionError) as exc:  # vLLM checks with assert in __post_init__
            raise errors.FailedPrecondition(f"adapter {self.name!r}: {exc}", field="adapter") from exc


def read_adapter_config(path: str, field: str = "path") -> dict[str, Any]:
    """Check an HF PEFT LoRA directory (a resolved path: adapter_paths.confine) and return its adapter_config.json.
    Files are opened without following symlinks (adapter_files.py); errors never quote the file's contents."""
    if not Path(path).is_dir():
        raise errors.InvalidArgument(f"{field}: adapter directory {path} does not exist", field=field)
    try:
        text = adapter_files.read_file(path, CONFIG_FILE, MAX_CONFIG_BYTES)
    except adapter_files.Unreadable as exc:
        raise errors.InvalidArgument(f"{field}: adapter at {path}: {exc.reason}", field=field) from None
    try:
        cfg = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument(f"{field}: {CONFIG_FILE} is not valid JSON (or not UTF-8)", field=field) from None
    if not isinstance(cfg, dict):
        raise errors.InvalidArgument(f"{field}: {CONFIG_FILE} must hold a JSON object", field=field)
    check_files(path, field)
    return cfg


def lora_alpha(cfg: dict[str, Any], rank: int, field: str = "path") -> float:
    """adapter_config.json's lora_alpha (PEFT's default: the rank); anything but a positive finite number is the
    caller's mistake, never INTERNAL, and the message names only the value's JSON type."""
    alpha = cfg.get("lora_alpha", rank)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        shown = repr(alpha) if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else "not a number"
        raise errors.InvalidArgument(f"{field}: lora_alpha must be a positive number, got {shown}", field=field)
    return float(alpha)


def check_files(path: str, field: str) -> None:
    """The weights file is there and reachable without a symlink. The external engines read the files themselves,
    whenever they (re)load an adapter, so this is checked again on every use (`AdapterRegistry.acquire`)."""
    problems = []
    for name in WEIGHT_FILES:
        try:
            adapter_files.check_file(path, name)
            return
        except adapter_files.Unreadable as exc:
            problems.append(exc.reason)
    raise errors.InvalidArgument(f"{field}: adapter at {path}: {'; '.join(problems)}", field=field)


def check_weights(path: str) -> None:
    """Dtypes and NaN / inf of adapter_model.safetensors, once at load: the engine reads the weights itself later,
    and a NaN adapter would make its outputs empty. An adapter_model.bin (a pickle) is left to the engine's loader:
    reading it here would mean unpickling an untrusted file."""
    try:
        adapter_files.check_file(path, "adapter_model.safetensors")
    except adapter_files.Unreadable:
        return
    from trt_gateway.engine.lora.adapter import check_weights_file  # torch: every external engine brings it

    check_weights_file(Path(path))


class AdapterRegistry:
    def __init__(
        self,
        model: str,
        max_lora_rank: int,
        target_modules: Sequence[str] = (),
        engine_modules: Callable[[Sequence[str]], list[str]] = sorted,
    ) -> None:
        """target_modules: the engine's module names the model was built with LoRA for (empty: all);
        engine_modules: an adapter's HF module names (q_proj, ...) in the engine's names, to check against them."""
        self.model = model
        self.max_lora_rank = max_lora_rank
        self.target_modules = frozenset(target_modules)
        self.engine_modules = engine_modules
        self._adapters: dict[str, Adapter] = {}
        self._active: dict[str, int] = {}
        self._ids = itertools.count(1)

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def load(self, name: str, path: str) -> Adapter:
        existing = self._adapters.get(name)
        if existing is not None:
            if existing.path != path:
                raise errors.AlreadyExists(f"adapter {name!r} is already loaded from {existing.path}", field="name")
            return existing
        cfg = read_adapter_config(path)
        rank = cfg.get("r")
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= self.max_lora_rank:
            shown = rank if isinstance(rank, int) else f"a JSON {type(rank).__name__}"  # never quote the file
            raise errors.InvalidArgument(
                f"path: adapter rank r={shown} is outside [1, max_lora_rank={self.max_lora_rank}]", field="path"
            )
        modules = cfg.get("target_modules") or ()
        modules = (modules,) if isinstance(modules, str) else tuple(sorted(str(m) for m in modules))
        uncovered = sorted(set(self.engine_modules(modules)) - self.target_modules) if self.target_modules else []
        if uncovered:
            raise errors.InvalidArgument(
                f"path: adapter targets {', '.join(uncovered)}, which the server's lora_target_modules "
                f"({', '.join(sorted(self.target_modules))}) do not include",
                field="path",
            )
        alpha = lora_alpha(cfg, rank)
        check_weights(path)
        adapter = Adapter(name, path, next(self._ids), rank, alpha, modules)
        self._adapters[name] = adapter
        return adapter

    def unload(self, name: str) -> Adapter:
        """Forget an adapter no request holds; the engine may drop it by the returned adapter's id."""
        if name not in self._adapters:
            raise errors.NotFound(f"adapter {name!r} is not loaded", field="name")
        if self._active.get(name):
            raise errors.FailedPrecondition(
                f"adapter {name!r} is in use by {self._active[name]} request(s); retry when they finish", field="name"
            )
        return self._adapters.pop(name)

    def acquire(self, name: str) -> Adapter:
        adapter = self._adapters.get(name)
        if adapter is None:
            raise errors.NotFound(f"adapter {name!r} is not loaded", field="adapter")
        try:  # its files may have changed since Load (a symlink swapped in): the engine is about to read them
            check_files(adapter.path, "adapter")
        except errors.GatewayError as exc:  # its message names server paths: logged, not sent to the client
            log.warning("adapter %s can no longer be used: %s", name, exc.message)
            raise errors.FailedPrecondition(
                f"adapter {name!r}: its files changed or disappeared since it was loaded (the server log says how); "
                "unload and load it again",
                field="adapter",
            ) from None
        self._active[name] = self._active.get(name, 0) + 1
        return adapter

    def release(self, name: str) -> None:
        self._active[name] = self._active.get(name, 1) - 1

    def infos(self) -> list[AdapterInfo]:
        return [
            AdapterInfo(
                name=a.name, path=a.path, model=self.model, rank=a.rank, alpha=a.alpha, target_modules=a.target_modules,
                residency=Residency.GPU if self._active.get(a.name) else self._idle_residency(a.name),
                active_requests=self._active.get(a.name, 0),
            )
            for a in self._adapters.values()
        ]

    def info(self, adapter: Adapter) -> AdapterInfo:
        return next(i for i in self.infos() if i.name == adapter.name)

    def _idle_residency(self, name: str) -> Residency:
        """Where an adapter no request uses is, as far as the gateway can tell."""
        return Residency.DISK


@contextlib.contextmanager
def pinned(registry: AdapterRegistry | None, name: str | None) -> Iterator[Adapter | None]:
    """The adapter a request names (None: the base model), acquired for as long as the request runs."""
    if not name:
        yield None
        return
    if registry is None:
        raise errors.Unimplemented("adapter: LoRA is off (no adapter roots configured)", field="adapter")
    adapter = registry.acquire(name)
    try:
        yield adapter
    finally:  # finished, failed, or closed by the server on cancel/deadline/disconnect
        registry.release(name)
