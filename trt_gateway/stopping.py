"""Stop strings over streamed text, with a holdback so that no part of a stop string is ever sent to the client.

Text arrives as deltas. A stop string may be split across deltas ("\\n\\nUs" + "er:"), so the tail of the text that
could still grow into a stop is held back until the next delta decides it. On a match the output is cut just before
the stop (or just after it, with `include_stop`) and the request is finished by the caller; at a finish for any other
reason, `flush` releases the held tail.

Which stop wins when several could: the one that is complete earliest in the text (smallest end), and among those the
longest (earliest start). That choice does not depend on how the text was split into deltas.
"""

from __future__ import annotations

from collections.abc import Iterable


class StopStringMatcher:
    """One request's stop-string state. Feed it the detokenizer's deltas; send on what `push` returns."""

    def __init__(self, stops: Iterable[str], *, include_stop: bool = False) -> None:
        # De-duplicated, order kept. An empty stop would match before any text; the server's validation refuses it,
        # and here it is ignored rather than ending every request at once.
        self._stops = tuple(s for s in dict.fromkeys(stops) if s)
        self._include_stop = include_stop
        self._held = ""
        self._matched: str | None = None

    @property
    def matched(self) -> str | None:
        """The stop string that ended the text, or None while none has."""
        return self._matched

    @property
    def held(self) -> str:
        """Text received but not yet released: a tail that may be the start of a stop string."""
        return self._held

    def push(self, delta: str) -> str:
        """Take a text delta; return the part that is safe to emit. After a match, everything is dropped."""
        if self._matched is not None or not self._stops:
            return "" if self._matched is not None else delta
        text = self._held + delta
        # 1. A complete stop anywhere in held + new text ends the output there.
        match = self._first_match(text)
        if match is not None:
            start, stop = match
            self._matched, self._held = stop, ""
            return text[: start + len(stop)] if self._include_stop else text[:start]
        # 2. Otherwise hold the longest tail that is a proper prefix of some stop; release the rest.
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At a finish for another reason (length, EOS): the held tail can no longer become a stop; release it."""
        held, self._held = self._held, ""
        return "" if self._matched is not None else held

    def _first_match(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self._stops:
            start = text.find(stop)
            if start >= 0:
                candidate = (start + len(stop), start, stop)
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
        return None if best is None else (best[1], best[2])

    def _partial_tail(self, text: str) -> int:
        # Longest k such that text[-k:] is a proper prefix of a stop. A full stop cannot be here: _first_match ran.
        longest = max(len(s) for s in self._stops) - 1
        for k in range(min(longest, len(text)), 0, -1):
            tail = text[len(text) - k :]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0


def partial_suffix(text: str, tag: str) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of `tag` (it may become the tag): text to
    hold back in a stream until the next delta says whether the tag follows."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
