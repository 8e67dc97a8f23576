"""Worker threads for the engine's CPU-heavy side work (tokenizing long texts, compiling grammars).

They run at a lower CPU priority than the event loop and the engine thread: on a machine with few cores, a burst of
such work must slow itself rather than every stream and health check (measured on 2 cores: four 1M-character texts
tokenized in four normal threads stalled the event loop for up to 1 s; in one low-priority thread, under 0.1 s).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


def pool(workers: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, name, initializer=lower_priority)


def default_workers() -> int:
    """One thread for every four cores, at least one: the rest stay for the loop, the engine and gRPC."""
    return max(1, (os.cpu_count() or 1) // 4)


def lower_priority() -> None:
    """Linux: niceness is per thread, and threads started from this one (xgrammar's) inherit it. Best effort:
    elsewhere the work just runs at normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
