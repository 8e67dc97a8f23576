"""StopStringMatcher: holdback across deltas, overlapping stops, include_stop, flush, and independence from chunking."""

from __future__ import annotations

import itertools
import random

import pytest

from trt_gateway.stopping import StopStringMatcher


def stream(stops: list[str], deltas: list[str], include_stop: bool = False) -> tuple[list[str], str | None, str]:
    """Push every delta (as the engine does until it sees a match); return (outputs, matched, flush())."""
    m = StopStringMatcher(stops, include_stop=include_stop)
    out = []
    for d in deltas:
        out.append(m.push(d))
        if m.matched is not None:
            break
    return out, m.matched, m.flush()


def test_no_stops_passes_text_through() -> None:
    m = StopStringMatcher([])
    assert m.push("abc") == "abc"
    assert m.flush() == ""
    assert m.matched is None


def test_empty_stop_strings_are_ignored() -> None:
    assert stream(["", "END"], ["a", "b END"]) == (["a", "b "], "END", "")


def test_stop_split_across_deltas_is_held_then_cut() -> None:
    out, matched, rest = stream(["\n\nUser:"], ["Hello\n\nUs", "er: more", "never seen"])
    assert out == ["Hello", ""]
    assert matched == "\n\nUser:"
    assert rest == ""


def test_held_text_is_released_when_it_stops_being_a_prefix() -> None:
    m = StopStringMatcher(["abc"])
    assert m.push("xab") == "x"
    assert m.held == "ab"
    assert m.push("d") == "abd"
    assert m.held == ""


def test_holdback_keeps_the_longest_possible_prefix() -> None:
    # "aab" can start at any of the trailing a's: only text that can no longer begin a match is released.
    m = StopStringMatcher(["aab"])
    assert [m.push(c) for c in "aaa"] == ["", "", "a"]
    assert m.push("b") == ""
    assert m.matched == "aab"


def test_include_stop_keeps_the_stop_string() -> None:
    out, matched, _ = stream(["STOP"], ["abc S", "TOP and more"], include_stop=True)
    assert "".join(out) == "abc STOP"
    assert matched == "STOP"


def test_text_after_the_stop_in_the_same_delta_is_dropped() -> None:
    out, matched, rest = stream(["."], ["one. two. three"])
    assert out == ["one"] and matched == "." and rest == ""


def test_after_a_match_everything_is_dropped() -> None:
    m = StopStringMatcher(["x"])
    assert m.push("axb") == "a"
    assert m.push("more") == ""
    assert m.flush() == ""
    assert m.matched == "x"


def test_flush_releases_held_text_when_no_stop_matched() -> None:
    out, matched, rest = stream(["STOP"], ["abc ST"])
    assert out == ["abc "] and matched is None and rest == "ST"


def test_earliest_completed_stop_wins_over_a_longer_one_starting_earlier() -> None:
    # "b" is complete after "ab"; "abc" only after "abc". Chunked or not, "b" ends the text first.
    assert stream(["abc", "b"], ["abc"])[:2] == (["a"], "b")
    assert stream(["abc", "b"], ["ab", "c"])[:2] == (["a"], "b")


def test_same_end_goes_to_the_longer_stop() -> None:
    assert stream(["ab", "xab"], ["xab"])[:2] == ([""], "xab")
    assert stream(["ab", "xab"], ["x", "ab"])[:2] == (["", ""], "xab")


def test_overlapping_stops_sharing_prefixes() -> None:
    out, matched, _ = stream(["abcd", "bce"], ["zab", "ce"])
    assert "".join(out) == "za" and matched == "bce"


@pytest.mark.parametrize("include_stop", [False, True])
def test_result_does_not_depend_on_how_text_is_chunked(include_stop: bool) -> None:
    """Every split of a text into deltas yields the same emitted text and the same matched stop."""
    rng = random.Random(0)
    stops = ["aab", "ab", "bba", "abab", "\n\n"]
    for _ in range(200):
        text = "".join(rng.choice("ab\n") for _ in range(rng.randint(0, 12)))
        whole = stream(stops, [text], include_stop)
        expected = ("".join(whole[0]) + whole[2], whole[1])
        for cuts in itertools.combinations(range(1, len(text)), min(2, max(0, len(text) - 1))):
            bounds = [0, *cuts, len(text)]
            deltas = [text[a:b] for a, b in itertools.pairwise(bounds)]
            out, matched, rest = stream(stops, deltas, include_stop)
            assert ("".join(out) + rest, matched) == expected, (text, deltas)
        char_by_char = stream(stops, list(text), include_stop)
        assert ("".join(char_by_char[0]) + char_by_char[2], char_by_char[1]) == expected


def test_emitted_text_never_contains_a_stop_and_matches_a_reference() -> None:
    rng = random.Random(1)
    stops = ["END", "EN!", "\nQ:"]
    for _ in range(300):
        text = "".join(rng.choice(["E", "N", "D", "!", "\n", "Q", ":", "x"]) for _ in range(rng.randint(0, 20)))
        deltas, i = [], 0
        while i < len(text):
            n = rng.randint(1, 4)
            deltas.append(text[i : i + n])
            i += n
        out, matched, rest = stream(stops, deltas)
        emitted = "".join(out) + rest
        # Reference: cut at the stop that ends first (longest on a tie).
        hits = [(text.find(s) + len(s), text.find(s), s) for s in stops if s in text]
        if hits:
            end, start, stop = min(hits)
            assert (emitted, matched) == (text[:start], stop)
        else:
            assert (emitted, matched) == (text, None)
        assert not any(s in emitted for s in stops)
