"""Stop strings with a holdback: text that might be the start of a stop string is never emitted early.

Feed text deltas in; get back the text that is safe to emit. A stop string can straddle deltas, so the matcher keeps
the longest tail of the pending text that is a proper prefix of some stop string. On a match the output is cut before
the stop string (or after it, with include_stop) and nothing after it is ever emitted.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str], *, include_stop: bool = False) -> None:
        self.stops = tuple(s for s in stops if s)
        self.include_stop = include_stop
        self._max_len = max((len(s) for s in self.stops), default=0)
        self._pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, str | None]:
        """Return (text safe to emit now, the matched stop string or None)."""
        if self.matched is not None:
            return "", self.matched
        if not self.stops:
            return text, None
        pending = self._pending + text
        # 1. The earliest complete match wins; ties go to the longer stop string.
        hits = [(pending.find(s), -len(s), s) for s in self.stops if s in pending]
        if hits:
            pos, _, stop = min(hits)
            self.matched = stop
            self._pending = ""
            return pending[: pos + len(stop)] if self.include_stop else pending[:pos], stop
        # 2. Hold back the longest tail that could still grow into a stop string.
        hold = 0
        for k in range(min(len(pending), self._max_len - 1), 0, -1):
            tail = pending[-k:]
            if any(s.startswith(tail) for s in self.stops):
                hold = k
                break
        self._pending = pending[len(pending) - hold :]
        return pending[: len(pending) - hold], None

    def flush(self) -> str:
        """The held-back text, when generation ended without a match."""
        if self.matched is not None:
            return ""
        out, self._pending = self._pending, ""
        return out
