"""StopMatcher: holdback across deltas, overlapping prefixes, include_stop, flush; and invariants on random input."""

from __future__ import annotations

import random

import pytest

from trt_gateway.stopping import StopMatcher


def run(stops, deltas, include_stop=False) -> tuple[list[str], str | None, str]:
    m = StopMatcher(stops, include_stop=include_stop)
    out = []
    matched = None
    for d in deltas:
        text, matched = m.feed(d)
        out.append(text)
        if matched is not None:
            break
    return out, matched, m.flush()


def test_no_stops_passes_through() -> None:
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", None)
    assert m.feed("") == ("", None)
    assert m.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    m = StopMatcher(["", ""])
    assert m.stops == ()
    assert m.feed("abc") == ("abc", None)


def test_holdback_across_deltas_then_match() -> None:
    out, matched, rest = run(["STOP"], ["abc S", "TO", "P and more"])
    assert out == ["abc ", "", ""]
    assert matched == "STOP" and rest == ""


def test_holdback_released_when_it_diverges() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("xS") == ("x", None)
    assert m.feed("T") == ("", None)
    assert m.feed("x") == ("STx", None)
    assert m.feed("ST") == ("", None)
    assert m.flush() == "ST"  # generation ended: held text is emitted
    assert m.flush() == ""


def test_longest_possible_tail_is_held() -> None:
    m = StopMatcher(["aab"])
    assert m.feed("aa") == ("", None)
    assert m.feed("a") == ("a", None)  # "aaa": the tail "aa" may still become "aab"
    assert m.feed("b") == ("", "aab")


def test_overlapping_prefixes() -> None:
    # "abc" is held as a prefix of "abcd"; "e" completes "bce", which starts inside the held text.
    out, matched, _ = run(["abcd", "bce"], ["abc", "e"])
    assert "".join(out) == "a" and matched == "bce"
    out, matched, _ = run(["abcd", "bce"], ["ab", "c", "d"])
    assert "".join(out) == "" and matched == "abcd"


def test_earliest_match_wins_and_ties_go_to_the_longer() -> None:
    assert StopMatcher(["cd", "bc"]).feed("abcd") == ("a", "bc")
    assert StopMatcher(["ab", "abc"]).feed("xabcz") == ("x", "abc")
    assert StopMatcher(["ab", "abc"], include_stop=True).feed("xabcz") == ("xabc", "abc")


def test_include_stop() -> None:
    out, matched, _ = run(["wor"], ["hello w", "o", "rld"], include_stop=True)
    assert "".join(out) == "hello wor" and matched == "wor"
    out, matched, _ = run(["wor"], ["hello w", "o", "rld"], include_stop=False)
    assert "".join(out) == "hello " and matched == "wor"


def test_nothing_after_a_match() -> None:
    m = StopMatcher(["x"])
    assert m.feed("axb") == ("a", "x")
    assert m.feed("more x") == ("", "x")
    assert m.flush() == ""
    assert m.matched == "x"


def test_unicode() -> None:
    out, matched, _ = run(["✓✓"], ["héllo ✓", "✓ after"])
    assert "".join(out) == "héllo " and matched == "✓✓"


@pytest.mark.parametrize("include_stop", [False, True])
def test_random_invariants(include_stop: bool) -> None:
    rng = random.Random(1234)
    alphabet = "abc"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        deltas = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        out, matched, rest = run(stops, deltas, include_stop)
        emitted = "".join(out) + rest
        assert text.startswith(emitted), (text, stops, deltas, emitted)
        if matched is None:
            assert emitted == text  # nothing lost when nothing matched
            assert not any(s in text for s in stops)
        else:
            assert matched in stops
            body = emitted[: -len(matched)] if include_stop else emitted
            if include_stop:
                assert emitted.endswith(matched)
            assert text.startswith(body + matched)  # cut exactly before the stop string
            assert not any(s in body for s in stops)  # never emitted a stop string (partially or whole)
        # Feeding one character at a time with a single stop string gives the same result as all at once.
        if len(stops) == 1:
            whole = run(stops, [text], include_stop)
            char = run(stops, list(text), include_stop)
            assert "".join(whole[0]) + whole[2] == "".join(char[0]) + char[2]
            assert whole[1] == char[1]
