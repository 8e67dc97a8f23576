"""langchain-tests' standard unit suite (no network: see conftest.py)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_trt_gateway import ChatTrtGateway


class TestChatTrtGatewayUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatTrtGateway]:
        return ChatTrtGateway

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "demo", "target": "gateway.example:50051"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {"TRT_GATEWAY_TARGET": "env-host:1234", "TRT_GATEWAY_API_KEY": "env-key"}
        return env, {"model": "demo"}, {"target": "env-host:1234", "api_key": "env-key"}
