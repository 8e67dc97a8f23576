"""The public surface and the sans-I/O core: no server needed."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing

import pytest

import trt_gateway
import trt_gateway.client
from trt_gateway import errors
from trt_gateway.client import AsyncGatewayClient, ClientOptions, GatewayClient
from trt_gateway.client._base import Deadline, RetryPolicy
from trt_gateway.client._convert import GENERATE_KEYWORDS, GenerateParams, generate_request, tokenize_request


def test_all_is_pinned():
    assert trt_gateway.__all__ == ["AsyncGatewayClient", "GatewayClient", "__version__", "errors"]
    assert trt_gateway.client.__all__ == [
        "CALL_FIELDS",
        "CONNECTION_FIELDS",
        "REQUEST_FIELDS",
        "AdapterInfo",
        "AsyncGatewayClient",
        "AsyncStream",
        "Capabilities",
        "ClientOptions",
        "Completion",
        "GatewayClient",
        "GenerateParams",
        "LazyClients",
        "ModelInfo",
        "ModelLimits",
        "Output",
        "PromptInfo",
        "Residency",
        "SharedClients",
        "Stream",
        "StreamChunk",
        "Timings",
        "TokenLogprob",
        "Tool",
        "ToolCall",
        "TopLogprob",
        "Usage",
        "check_call_fields",
        "connection_options",
    ]
    for module in (trt_gateway, trt_gateway.client):
        assert all(hasattr(module, name) for name in module.__all__)


def test_importing_the_client_does_not_import_torch():
    code = "import sys, trt_gateway.client, trt_gateway; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sync_and_async_clients_mirror_each_other():
    public = {n for n in dir(GatewayClient) if not n.startswith("_")}
    assert public == {n for n in dir(AsyncGatewayClient) if not n.startswith("_")}
    for name in public - {"options", "retry_policy", "target"}:
        sync, aio = getattr(GatewayClient, name), getattr(AsyncGatewayClient, name)
        assert inspect.signature(sync).parameters.keys() == inspect.signature(aio).parameters.keys(), name
        assert inspect.iscoroutinefunction(aio) == (name != "stream"), name
    expected = {
        "generate",
        "stream",
        "tokenize",
        "models",
        "model_info",
        "abort",
        "adapters",
        "load_adapter",
        "unload_adapter",
        "health",
        "close",
    }
    assert expected <= public


def test_only_given_fields_are_set():
    msg = generate_request("hi")
    assert msg.text == "hi"
    for sub in ("sampling", "stopping", "response", "guided", "speculative"):
        assert not msg.HasField(sub), sub
    msg = generate_request("hi", temperature=0.0, max_tokens=5, top_k=None)
    assert msg.sampling.HasField("temperature") and msg.sampling.temperature == 0.0  # zero is not "unset"
    assert msg.stopping.max_tokens == 5 and not msg.sampling.HasField("top_p") and not msg.sampling.HasField("seed")


def test_every_keyword_reaches_its_field():
    msg = generate_request(
        token_ids=[1, 2], model="m", max_tokens=9, min_tokens=1, temperature=0.5, top_p=0.9, top_k=4, min_p=0.1,
        repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.3, seed=7, logit_bias={3: -1.5},
        stop="x", stop_token_ids=[5], include_stop=True, ignore_eos=True, logprobs=True, top_logprobs=2,
        prompt_token_ids=True, echo=True, adapter="a", n=2, priority=3, json_schema={"type": "object"},
        speculative=False, num_draft_tokens=2, request_id="r-1",
    )  # fmt: skip
    assert (list(msg.token_ids), msg.model, msg.adapter, msg.n, msg.priority, msg.request_id) == (
        [1, 2],
        "m",
        "a",
        2,
        3,
        "r-1",
    )
    s, st, r, g, sp = msg.sampling, msg.stopping, msg.response, msg.guided, msg.speculative
    assert (s.top_k, s.seed, dict(s.logit_bias)) == (4, 7, {3: -1.5})
    assert s.temperature == pytest.approx(0.5) and s.min_p == pytest.approx(0.1)
    assert (st.max_tokens, st.min_tokens, list(st.stop), list(st.stop_token_ids), st.include_stop, st.ignore_eos) == (
        9,
        1,
        ["x"],
        [5],
        True,
        True,
    )
    assert (r.logprobs, r.top_logprobs, r.prompt_token_ids, r.echo) == (True, 2, True, True)
    assert json.loads(g.json_schema) == {"type": "object"}
    assert (sp.disable, sp.num_draft_tokens) == (True, 2)
    assert not generate_request("x", speculative=True).HasField("speculative")
    assert list(generate_request("x", choice=["a", "b"], stop=["p", "q"]).guided.choice) == ["a", "b"]
    assert generate_request("x", regex="a+").guided.regex == "a+"
    assert generate_request("x", grammar="root ::= 'a'").guided.grammar == "root ::= 'a'"
    assert GENERATE_KEYWORDS == set(typing.get_type_hints(GenerateParams)) | {"text"}  # one list, kept in sync


def test_a_value_protobuf_refuses_is_invalid_argument_before_any_rpc():
    with pytest.raises(errors.InvalidArgument, match="max_tokens") as exc_info:
        generate_request("x", max_tokens=-1)
    assert exc_info.value.field == "stopping.max_tokens"
    with pytest.raises(errors.InvalidArgument) as exc_info:
        generate_request("x", token_ids=["a"])  # type: ignore[list-item]
    assert exc_info.value.field == "token_ids"


def test_messages_accept_dicts_and_tuples():
    msg = generate_request(messages=[{"role": "system", "content": "s"}, ("user", "u")])
    assert [(m.role, m.content) for m in msg.messages] == [("system", "s"), ("user", "u")]
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        generate_request(messages=["just text"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        generate_request("x", temprature=1.0)  # type: ignore[call-arg]
    tok = tokenize_request(None, [("user", "u")], "m", add_special_tokens=False)
    assert tok.HasField("add_special_tokens") and not tok.add_special_tokens
    assert not tokenize_request("t", None, "", add_special_tokens=True).HasField("add_special_tokens")


def test_retry_policy():
    policy = RetryPolicy(max_retries=3, initial_backoff_s=0.1, max_backoff_s=1.0, rand=lambda: 1.0)
    assert policy.should_retry(errors.Unavailable("x")) and policy.should_retry(errors.ResourceExhausted("x"))
    assert not policy.should_retry(errors.InvalidArgument("x")) and not policy.should_retry(ValueError())
    assert [policy.backoff_s(a, None) for a in (1, 2, 3, 6)] == [0.1, 0.2, 0.4, 1.0]
    assert policy.backoff_s(1, errors.ResourceExhausted("x", retry_after_s=0.75)) == 0.75  # the hint is a floor
    assert policy.backoff_s(4, errors.ResourceExhausted("x", retry_after_s=0.1)) == 0.8
    assert RetryPolicy(rand=lambda: 0.0, initial_backoff_s=0.1).backoff_s(1, None) == 0.05  # jitter: half to full
    no_deadline = Deadline(None)
    assert not policy.should_stop(3, 100.0, no_deadline) and policy.should_stop(4, 0.0, no_deadline)
    assert policy.should_stop(1, 0.5, Deadline(0.3)) and not policy.should_stop(1, 0.1, Deadline(10.0))


def test_options_validation_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="client_key"):
        ClientOptions(client_certificate=b"x")
    with pytest.raises(ValueError, match="max_retries"):
        ClientOptions(max_retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        ClientOptions(timeout=0)
    with pytest.raises(ValueError, match="root_certificates: cannot read"):
        GatewayClient("localhost:1", root_certificates=str(tmp_path / "missing.pem"))
    opts = ClientOptions(api_key="k", metadata=(("x-team", "a"),))
    assert opts.call_metadata({"x-request-id": "r"}) == (
        ("x-team", "a"),
        ("authorization", "Bearer k"),
        ("x-request-id", "r"),
    )
    assert not opts.secure and ClientOptions(server_name_override="h").secure
    assert ("grpc.ssl_target_name_override", "h") in ClientOptions(server_name_override="h").grpc_options()
    assert ("grpc.max_receive_message_length", 1024) in ClientOptions(max_message_bytes=1024).grpc_options()
