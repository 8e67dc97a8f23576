"""langchain-tests' standard integration suite, against a live gateway serving the demo model (see conftest.py)."""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_trt_gateway import ChatTrtGateway


class TestChatTrtGatewayIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatTrtGateway]:
        return ChatTrtGateway

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # `target` comes from TRT_GATEWAY_TARGET (conftest). Greedy, short and at least one token: the suite asserts
        # non-empty content, and the tiny demo model may otherwise end at once.
        return {"model": "demo", "temperature": 0, "max_tokens": 24, "model_kwargs": {"min_tokens": 1}}

    @property
    def model_override_value(self) -> str:
        return "demo-b"  # the same weights under a second name (conftest.TwoNameDemo)

    @property
    def has_structured_output(self) -> bool:
        # Structured output is guided JSON decoding, which the native executor does not offer yet (its model info
        # says so, and ChatTrtGateway refuses with Unimplemented): the suite's structured-output tests skip.
        return False
