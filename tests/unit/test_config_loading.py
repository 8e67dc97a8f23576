"""Config loading: TOML and JSON files, unknown keys named by dotted path, type errors, validation errors, merge."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from trt_gateway.config import (
    ConfigError,
    GatewayConfig,
    LimitsConfig,
    from_mapping,
    load_file,
    merge,
)

TOML = """
[server]
host = "0.0.0.0"
port = 6000
metrics_port = 9100
grace_period_s = 5          # an int where a float is expected is fine
api_keys = ["k1", "k2"]

[executor]
name = "echo"
served_name = "tiny"
options = { script = "hi", token_delay_s = 0.01 }

[executor.lora]
adapter_roots = ["/srv/adapters"]
adapters = { sql = "/srv/adapters/sql" }
max_loras = 2
max_cpu_loras = 4

[executor.speculative]
mode = "ngram"
num_draft_tokens = 3

[limits]
max_n = 4

[admission]
max_inflight = 8
max_queued = 0
"""


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(TOML)
    cfg = from_mapping(load_file(path))
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 6000 and cfg.server.metrics_port == 9100
    assert cfg.server.grace_period_s == 5.0 and isinstance(cfg.server.grace_period_s, float)
    assert cfg.server.api_keys == ("k1", "k2")
    assert cfg.executor.name == "echo" and cfg.executor.served_name == "tiny"
    assert cfg.executor.options == {"script": "hi", "token_delay_s": 0.01}
    assert cfg.executor.lora.adapter_roots == ("/srv/adapters",)
    assert cfg.executor.lora.adapters == {"sql": "/srv/adapters/sql"}
    assert cfg.executor.lora.max_loras == 2 and cfg.executor.lora.max_cpu_loras == 4
    assert cfg.executor.speculative.mode == "ngram" and cfg.executor.speculative.num_draft_tokens == 3
    assert cfg.limits.max_n == 4 and cfg.limits.max_stop == LimitsConfig().max_stop
    assert cfg.admission.max_inflight == 8 and cfg.admission.max_queued == 0
    assert not cfg.server.tls.enabled


def test_json_file_equals_toml(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text(TOML)
    data = load_file(tmp_path / "gw.toml")
    (tmp_path / "gw.json").write_text(json.dumps(data))
    assert load_file(tmp_path / "gw.json") == data
    assert from_mapping(load_file(tmp_path / "gw.json")) == from_mapping(data)


def test_defaults() -> None:
    cfg = from_mapping({})
    assert cfg == GatewayConfig()
    assert cfg.server.port == 50051 and cfg.executor.name == "native"
    assert cfg.admission.max_inflight == 256 and cfg.limits.default_max_tokens == 256


def test_config_is_frozen() -> None:
    cfg = from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sevrer": {}}, "sevrer"),
        ({"server": {"prot": 1}}, "server.prot"),
        ({"server": {"tls": {"cert": "x"}}}, "server.tls.cert"),
        ({"executor": {"lora": {"max_lora": 2}}}, "executor.lora.max_lora"),
        ({"executor": {"speculative": {"draft": "x"}}}, "executor.speculative.draft"),
        ({"limits": {"max_tokenz": 2}}, "limits.max_tokenz"),
        ({"admission": {"max_queue": 2}}, "admission.max_queue"),
    ],
)
def test_unknown_key_names_the_dotted_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(data)
    assert f"unknown config key {key};" in str(err.value)
    assert "known keys" in str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": "50051"}}, "server.port must be int, got str"),
        ({"server": {"port": 1.5}}, "server.port must be int, got float"),
        ({"server": {"port": True}}, "server.port must be int, got bool"),
        ({"server": {"grace_period_s": "5"}}, "server.grace_period_s must be float"),
        ({"server": {"grace_period_s": True}}, "server.grace_period_s must be float"),
        ({"server": {"api_keys": "k1"}}, "server.api_keys must be a list, got str"),
        ({"server": {"api_keys": ["k1", 2]}}, "server.api_keys[1] must be str, got int"),
        ({"server": "fast"}, "server must be a table, got str"),
        ({"server": {"tls": []}}, "server.tls must be a table"),
        ({"executor": {"options": ["a"]}}, "executor.options must be a table, got list"),
        ({"executor": {"lora": {"adapters": ["a"]}}}, "executor.lora.adapters must be a table"),
        ({"executor": {"lora": {"adapter_roots": "/srv"}}}, "executor.lora.adapter_roots must be a list"),
        ({"limits": {"max_n": None}}, "limits.max_n must be int"),
        ({"admission": {"max_inflight": False}}, "admission.max_inflight must be int, got bool"),
    ],
)
def test_type_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(data)
    assert message in str(err.value)


@pytest.fixture
def cert(tmp_path: Path) -> str:
    p = tmp_path / "cert.pem"
    p.write_text("not really a certificate")
    return str(p)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"executor": {"lora": {"max_loras": 8, "max_cpu_loras": 4}}}, "executor.lora.max_cpu_loras must be >= max_loras"),
        ({"executor": {"lora": {"max_lora_rank": 0}}}, "executor.lora.max_lora_rank must be >= 1"),
        ({"executor": {"lora": {"adapters": {"x": "/a"}}}}, "executor.lora.adapters needs at least one adapter root"),
        ({"executor": {"lora": {"adapters": {"bad name": "/a"}, "adapter_roots": ["/"]}}}, "invalid adapter name"),
        ({"executor": {"lora": {"adapters": {"sql\n": "/a"}, "adapter_roots": ["/"]}}}, "invalid adapter name"),
        ({"executor": {"speculative": {"mode": "eagle9"}}}, "executor.speculative.mode must be one of"),
        ({"executor": {"speculative": {"mode": "draft"}}}, "executor.speculative.draft_model is required"),
        ({"executor": {"speculative": {"num_draft_tokens": 17}}}, "executor.speculative.num_draft_tokens"),
        ({"server": {"port": 70000}}, "server.port must be in [0, 65535]"),
        ({"server": {"metrics_port": -1}}, "server.metrics_port must be in [0, 65535]"),
        ({"server": {"grace_period_s": -1}}, "server.grace_period_s must be >= 0"),
        ({"server": {"tls": {"cert_file": "{cert}"}}}, "server.tls: cert_file and key_file must be set together"),
        ({"server": {"tls": {"key_file": "{cert}"}}}, "server.tls: cert_file and key_file must be set together"),
        ({"server": {"tls": {"client_ca_file": "{cert}"}}}, "server.tls.client_ca_file needs cert_file and key_file"),
        ({"server": {"tls": {"cert_file": "/no/such.pem", "key_file": "{cert}"}}}, "server.tls.cert_file: no such file"),
        ({"server": {"tls": {"cert_file": "{cert}", "key_file": "{cert}", "client_ca_file": "/nope"}}},
         "server.tls.client_ca_file: no such file"),
        ({"limits": {"max_n": 0}}, "limits.max_n must be >= 1"),
        ({"limits": {"default_max_tokens": 100, "max_tokens": 50}}, "limits.default_max_tokens must be <= max_tokens"),
        ({"admission": {"max_inflight": 0}}, "admission.max_inflight must be >= 1"),
        ({"admission": {"max_queued": -1}}, "admission.max_queued must be >= 0"),
        ({"admission": {"retry_after_s": 0}}, "admission.retry_after_s must be > 0"),
    ],
)
def test_validation_errors(data: dict[str, Any], message: str, cert: str) -> None:
    data = json.loads(json.dumps(data).replace("{cert}", cert))
    with pytest.raises(ConfigError) as err:
        from_mapping(data)
    assert message in str(err.value)


def test_tls_with_both_files_is_enabled(cert: str) -> None:
    cfg = from_mapping({"server": {"tls": {"cert_file": cert, "key_file": cert, "client_ca_file": cert}}})
    assert cfg.server.tls.enabled


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_file(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text("{port: 1}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a table at the top level"):
        load_file(tmp_path / "list.json")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_file(tmp_path / "binary.toml")
    assert issubclass(ConfigError, ValueError)


def test_merge_cli_over_file() -> None:
    base = {
        "server": {"host": "0.0.0.0", "port": 1},
        "executor": {"name": "echo", "options": {"a": 1, "b": 2}, "lora": {"adapters": {"x": "/x"}, "max_loras": 2}},
    }
    override = {"server": {"port": 2}, "executor": {"options": {"b": 3}, "lora": {"adapters": {"y": "/y"}}}}
    out = merge(base, override)
    assert out["server"] == {"host": "0.0.0.0", "port": 2}
    assert out["executor"]["options"] == {"a": 1, "b": 3}
    assert out["executor"]["lora"] == {"adapters": {"x": "/x", "y": "/y"}, "max_loras": 2}
    assert base["server"]["port"] == 1  # inputs untouched
    assert merge({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
