"""The reasoning splitter over every way a stream can cut its text: the result never depends on the cuts."""

from __future__ import annotations

import pytest

from trt_gateway import reasoning


def _run(fmt: str, prompt: str | None, pieces: list[str]) -> tuple[str, str]:
    p = reasoning.parser(fmt, prompt)
    thought, content = [], []
    for piece in pieces:
        r, c = p.push(piece)
        thought.append(r)
        content.append(c)
    r, c = p.finish()
    return "".join(thought) + r, "".join(content) + c


CASES = [
    # (format, rendered prompt, output, reasoning, content)
    ("qwen3", "", "<think>plan it</think>The answer", "plan it", "The answer"),
    ("qwen3", "", "\n<think>\nplan\n</think>\n\nok", "\nplan\n", "\n\nok"),
    ("qwen3", "", "no thinking here </think> at all", "", "no thinking here </think> at all"),
    ("qwen3", "", "<thin but not a tag", "", "<thin but not a tag"),
    ("qwen3", "user: hi<think>\n", "plan</think>answer", "plan", "answer"),  # the template opened the block
    ("qwen3", "<think>a</think>q", "plan</think>answer", "", "plan</think>answer"),  # closed in the prompt
    ("qwen3", "", "<think>cut short by max_tok", "cut short by max_tok", ""),
    ("deepseek_r1", None, "plan</think>answer", "plan", "answer"),
    ("deepseek_r1", None, "<think>plan</think>answer", "plan", "answer"),  # a tag the model repeats is dropped
    ("deepseek_r1", None, "still thinking </thi", "still thinking </thi", ""),
    ("deepseek_r1", None, "", "", ""),
]


@pytest.mark.parametrize(("fmt", "prompt", "output", "thought", "content"), CASES)
def test_every_split_gives_the_same_result(fmt: str, prompt: str | None, output: str, thought: str, content: str) -> None:
    assert _run(fmt, prompt, [output]) == (thought, content)
    assert _run(fmt, prompt, list(output)) == (thought, content)  # one character a delta: every tag is cut
    for cut in range(len(output) + 1):
        assert _run(fmt, prompt, [output[:cut], output[cut:]]) == (thought, content), cut


def test_nothing_of_a_tag_is_released_before_it_is_decided() -> None:
    p = reasoning.parser("qwen3", None)
    assert p.push("  <th") == ("", "")  # may still be the opening tag
    assert p.push("ink>abc</") == ("abc", "")  # "</" may start the closing tag
    assert p.push("think>x") == ("", "x")
    assert p.finish() == ("", "")
