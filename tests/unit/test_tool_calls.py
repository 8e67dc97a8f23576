"""Tool-call parsing and constraining (trt_gateway/tool_calls.py): streamed text in any split, calls out whole,
anything that is not a well-formed call of a known tool left as content."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trt_gateway import errors, tool_calls
from trt_gateway.types import ChatMessage, GenerateRequest, GuidedDecoding, Prompt, Tool, ToolCall

TOOLS = (Tool("get_weather", "Weather now", json.dumps({"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]})), Tool("ping"))
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def request(choice: str = "", **kw: object) -> GenerateRequest:
    return GenerateRequest("r", "m", Prompt(messages=(ChatMessage("user", "hi"),)), tools=TOOLS, tool_choice=choice,
                           **kw)  # type: ignore[arg-type]


def run(parser: tool_calls.Parser, text: str, step: int) -> tuple[str, tuple[ToolCall, ...]]:
    out = "".join(parser.push(text[i : i + step]) for i in range(0, len(text), step))
    rest, calls = parser.finish()
    return out + rest, calls


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_hermes_in_any_split(step: int) -> None:
    text = "Let me check. " + CALL + "\n" + CALL.replace("Paris", "Oslo")
    content, calls = run(tool_calls.HermesParser({"get_weather"}), text, step)
    assert content == "Let me check. \n"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                  ("get_weather", {"city": "Oslo"})]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id


@pytest.mark.parametrize(
    "text",
    [
        "a < b and <tool_ca",  # a tag prefix that never completes
        '<tool_call>{"name": "unknown", "arguments": {}}</tool_call>',  # not one of the tools
        "<tool_call>not json</tool_call>",
        '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>',  # arguments not an object
    ],
)
def test_hermes_leaves_non_calls_as_content(text: str) -> None:
    assert run(tool_calls.HermesParser({"get_weather"}), text, 3) == (text, ())


def test_hermes_unclosed_last_block_is_a_call_if_it_parses() -> None:
    content, calls = run(tool_calls.HermesParser({"ping"}), '<tool_call>{"name": "ping", "arguments": {}}', 4)
    assert content == "" and [c.name for c in calls] == ["ping"]


def test_llama3_json() -> None:
    names = {"get_weather", "ping"}
    text = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}; {"name": "ping", "parameters": {}}'
    content, calls = run(tool_calls.Llama3JsonParser(names), text, 3)
    assert content == "" and [c.name for c in calls] == ["get_weather", "ping"]
    assert run(tool_calls.Llama3JsonParser(names), "  Plain answer {not a call}", 2) == ("  Plain answer {not a call}", ())
    assert run(tool_calls.Llama3JsonParser(names), '{"name": "nope"}', 2) == ('{"name": "nope"}', ())


def test_forced_calls_are_constrained_by_a_schema() -> None:
    named = tool_calls.constrain(request("get_weather"))
    assert json.loads(named.guided.json_schema or "") == json.loads(TOOLS[0].parameters)
    required = json.loads(tool_calls.constrain(request("required")).guided.json_schema or "")
    assert required["minItems"] == 1 and len(required["items"]["anyOf"]) == 2
    assert tool_calls.constrain(request("auto")).guided.kind is None


def test_required_keeps_each_tools_definitions_reachable() -> None:
    item = {"type": "object", "properties": {"n": {"type": "integer"}}}
    tools = tuple(Tool(name, "", json.dumps({"type": "object", "properties": {"x": {"$ref": "#/$defs/Item"}},
                                             "$defs": {"Item": item}})) for name in ("a", "b"))
    req = dataclasses.replace(request("required"), tools=tools)
    schema = json.loads(tool_calls.constrain(req).guided.json_schema or "")
    assert set(schema["$defs"]) == {"a__Item", "b__Item"}
    refs = [b["properties"]["arguments"]["properties"]["x"]["$ref"] for b in schema["items"]["anyOf"]]
    assert refs == ["#/$defs/a__Item", "#/$defs/b__Item"]
    with pytest.raises(errors.InvalidArgument, match="cannot be combined with guided.regex"):
        tool_calls.constrain(request("required", guided=GuidedDecoding(regex="a")))


def test_forced_parsers() -> None:
    p = tool_calls.parser_for(request("get_weather"), "hermes")
    assert p is not None and run(p, '{"city": "Lima"}', 4)[1][0].arguments == '{"city": "Lima"}'
    p = tool_calls.parser_for(request("required"), "hermes")
    calls = run(p, '[{"name": "ping", "arguments": {}}]', 4)[1]  # type: ignore[arg-type]
    assert [c.name for c in calls] == ["ping"]
    p = tool_calls.parser_for(request("required"), "hermes")
    assert run(p, '[{"name": "pi', 4) == ('[{"name": "pi', ())  # type: ignore[arg-type]  # cut short: content
    assert tool_calls.parser_for(request("none"), "hermes") is None


def test_templates_without_tools_get_a_system_turn() -> None:
    history = (ChatMessage("system", "Be brief."), ChatMessage("user", "Weather?"),
               ChatMessage("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
               ChatMessage("tool", "sunny", tool_call_id="call_1"))
    conversation, extra = tool_calls.chat_inputs(history, TOOLS, "{{ messages }}")
    assert extra == {} and conversation[0]["role"] == "system"
    assert conversation[0]["content"].startswith("Be brief.") and "get_weather" in conversation[0]["content"]
    assert conversation[2]["content"].startswith("<tool_call>")
    # such a template knows no "tool" role either: the result is a user turn, in Hermes' <tool_response> block
    assert conversation[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    assert tool_calls.chat_inputs(history, (), "{{ messages }}")[0][3]["role"] == "user"  # tools unbound now
    conversation, extra = tool_calls.chat_inputs(history, TOOLS, "{% for t in tools %}{% endfor %}")
    assert [t["function"]["name"] for t in extra["tools"]] == ["get_weather", "ping"]
    assert conversation[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


def test_required_without_parallel_calls_is_exactly_one_call() -> None:
    req = dataclasses.replace(request("required"), parallel_tool_calls=False)
    schema = json.loads(tool_calls.constrain(req).guided.json_schema or "")
    assert "anyOf" in schema and schema.get("type") != "array"
    p = tool_calls.parser_for(req, "hermes")
    calls = run(p, '{"name": "ping", "arguments": {}}', 3)[1]  # type: ignore[arg-type]
    assert [c.name for c in calls] == ["ping"]
