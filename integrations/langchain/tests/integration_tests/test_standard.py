"""langchain-tests' standard integration suite, against a live gateway serving the demo model (see conftest.py).

Tool calling and structured output are on: both run on the native engine's guided decoding. The tests xfailed
below fail for the demo model's quality alone (an 8M-parameter model trained on Python documentation): the
adapter's part (the constraint, the parsing, ids, content blocks, streaming) is checked by the tests that pass
and by test_structured_output.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_trt_gateway import ChatTrtGateway

QUALITY = "demo model quality: "


class TestChatTrtGatewayIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatTrtGateway]:
        return ChatTrtGateway

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # `target` comes from TRT_GATEWAY_TARGET (conftest). Greedy and at least one token: the suite asserts
        # non-empty content, and the tiny demo model may otherwise end at once. 64 tokens: the demo tokenizer spends
        # about one token per character of JSON, and a tool call {"name": ..., "arguments": ...} takes ~50.
        return {
            "model": "demo",
            "temperature": 0,
            "max_tokens": 64,
            "model_kwargs": {"min_tokens": 1},
        }

    @property
    def model_override_value(self) -> str:
        return "demo-b"  # the same weights under a second name (conftest.TwoNameDemo)

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    # -- model quality ----------------------------------------------------------------------------------------------

    @pytest.mark.xfail(reason=QUALITY + "the forced call is well-formed, but its argument is not the 3 the prompt asks")
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=QUALITY + "the forced call is well-formed, but its argument is not the 3 the prompt asks")
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=QUALITY + "with tool_choice=None (auto, unconstrained) the model answers in text")
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(
        reason=QUALITY + "json_mode allows any JSON object, and the model neither picks the asked keys nor closes "
        "the object within max_tokens (the cut output is reported as such)"
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason=QUALITY + "the model neither copies the Chinese name nor ends the unbounded strings within max_tokens "
        "(the cut call comes back in invalid_tool_calls); non-ASCII arguments: test_tools.py"
    )
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)

    @pytest.mark.xfail(
        reason=QUALITY + "greedy, the model loops inside the unbounded 'setup' string until max_tokens (the cut "
        "output is reported as such); bounded schemas: test_structured_output.py"
    )
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)
