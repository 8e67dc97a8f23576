"""Speculative configs: each one is built, passed to LLM(speculative_config=...), reported, and counted in usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trtllm_helpers import collect, executor_config, ids_of, req, started, write_model

from trt_gateway.config import ConfigError
from trt_gateway.executors.trtllm import TrtllmExecutor
from trt_gateway.types import StoppingCriteria


@pytest.fixture
def draft_dir(tmp_path: Path) -> str:
    return write_model(tmp_path / "draft")


def cases(draft: str) -> list[tuple[str, dict[str, Any], str, str, int]]:
    """(backend, options.speculative, expected class, capability, draft tokens)"""
    return [
        ("pytorch", {"decoding_type": "Eagle3", "max_draft_len": 4, "speculative_model_dir": draft},
         "Eagle3DecodingConfig", "eagle3", 4),
        ("pytorch", {"decoding_type": "Eagle", "max_draft_len": 3, "speculative_model_dir": draft,
                     "eagle3_one_model": False}, "EagleDecodingConfig", "eagle", 3),
        ("tensorrt", {"decoding_type": "Eagle", "max_draft_len": 3, "speculative_model_dir": draft},
         "EagleDecodingConfig", "eagle", 3),
        ("pytorch", {"decoding_type": "MTP", "num_nextn_predict_layers": 2}, "MTPDecodingConfig", "mtp", 2),
        ("pytorch", {"decoding_type": "NGram", "max_draft_len": 5, "max_matching_ngram_size": 3},
         "NGramDecodingConfig", "ngram", 5),
        ("pytorch", {"decoding_type": "draft_target", "max_draft_len": 2, "speculative_model": draft},
         "DraftTargetDecodingConfig", "draft", 2),
        ("tensorrt", {"decoding_type": "Medusa", "max_draft_len": 63, "num_medusa_heads": 4},
         "MedusaDecodingConfig", "medusa", 63),
        ("tensorrt", {"decoding_type": "Lookahead", "max_window_size": 4, "max_ngram_size": 3,
                      "max_verification_set_size": 4}, "LookaheadDecodingConfig", "lookahead", 4),
        ("pytorch", {"decoding_type": "AUTO"}, "AutoDecodingConfig", "auto", 0),
    ]


@pytest.mark.parametrize("index", range(9))
async def test_each_speculative_config(model_dir: str, draft_dir: str, control: Any, index: int) -> None:
    backend, spec, cls, capability, draft_tokens = cases(draft_dir)[index]
    executor = await started(model_dir, options={"backend": backend, "speculative": spec})
    config = control.llms[-1].args.speculative_config
    assert type(config).__name__ == cls
    assert executor.llm_kwargs["speculative_config"] is config
    if "speculative_model_dir" in spec or "speculative_model" in spec:
        assert config.speculative_model_dir == draft_dir  # the 1.0–1.2 field name, also for the 1.3 alias
    caps = executor.models()[0].capabilities
    assert (caps.speculative, caps.num_draft_tokens) == (capability, draft_tokens)


async def test_gateway_flags_map_to_ngram_and_draft_target(model_dir: str, draft_dir: str, control: Any) -> None:
    ngram = await started(model_dir, speculative={"mode": "ngram", "num_draft_tokens": 3})
    assert type(ngram.llm.args.speculative_config).__name__ == "NGramDecodingConfig"
    assert ngram.llm.args.speculative_config.max_matching_ngram_size > 0
    draft = await started(model_dir, speculative={"mode": "draft", "draft_model": draft_dir, "num_draft_tokens": 2})
    cfg = draft.llm.args.speculative_config
    assert type(cfg).__name__ == "DraftTargetDecodingConfig" and cfg.speculative_model_dir == draft_dir
    assert draft.models()[0].capabilities.num_draft_tokens == 2


async def test_eagle3_falls_back_to_eagle_config_on_older_versions(
    model_dir: str, draft_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorrt_llm.llmapi as llmapi

    monkeypatch.delattr(llmapi, "Eagle3DecodingConfig")  # 1.0/1.1: PyTorch's Eagle config means EAGLE-3
    executor = await started(model_dir, options={"speculative": {
        "decoding_type": "Eagle3", "max_draft_len": 4, "speculative_model_dir": draft_dir}})
    assert type(executor.llm.args.speculative_config).__name__ == "EagleDecodingConfig"
    assert executor.models()[0].capabilities.speculative == "eagle3"


async def test_usage_carries_draft_and_accepted_tokens(model_dir: str, draft_dir: str, control: Any) -> None:
    control.script = [[10, 11, 12], [13], [14, 15, 2]]  # 3 steps of 4 drafts: 2 + 0 + 1 accepted (EOS not counted)
    executor = await started(model_dir, options={"speculative": {
        "decoding_type": "Eagle3", "max_draft_len": 4, "speculative_model_dir": draft_dir}})
    deltas = await collect(executor, req(stopping=StoppingCriteria(max_tokens=50)))
    assert ids_of(deltas) == [10, 11, 12, 13, 14, 15]
    usage = deltas[-1].finish.usage  # type: ignore[union-attr]
    assert (usage.draft_tokens, usage.accepted_tokens) == (12, 3)
    assert control.submissions[-1]["sampling_params"].return_perf_metrics is True


@pytest.mark.parametrize(
    ("backend", "spec", "gateway", "message"),
    [
        ("pytorch", {"decoding_type": "Medusa", "max_draft_len": 4}, {}, "Medusa needs backend 'tensorrt'"),
        ("pytorch", {"decoding_type": "Lookahead", "max_window_size": 4, "max_ngram_size": 3,
                     "max_verification_set_size": 4}, {}, "Lookahead needs backend 'tensorrt'"),
        ("tensorrt", {"decoding_type": "MTP"}, {}, "MTP needs backend 'pytorch'"),
        ("tensorrt", {"decoding_type": "NGram", "max_draft_len": 2, "max_matching_ngram_size": 2}, {},
         "NGram needs backend 'pytorch'"),
        ("pytorch", {"decoding_type": "Eagle3", "max_draft_len": 4}, {}, "speculative_model_dir is required"),
        ("pytorch", {"decoding_type": "NGram", "max_draft_len": 4}, {}, "max_matching_ngram_size is required"),
        ("pytorch", {"decoding_type": "NGram", "max_draft_len": 0, "max_matching_ngram_size": 2}, {}, "must be > 0"),
        ("pytorch", {"max_draft_len": 4}, {}, "decoding_type is required"),
        ("pytorch", {"decoding_type": "Jacobi"}, {}, "unknown 'Jacobi'"),
        ("pytorch", {"decoding_type": "UserProvided"}, {}, "Drafter object"),
        ("pytorch", {"decoding_type": "SaveState"}, {}, "not for serving"),
        ("pytorch", {"decoding_type": "MTP", "typo_field": 1}, {}, "MTPDecodingConfig has no such field"),
        ("pytorch", {"decoding_type": "Eagle3", "max_draft_len": 2, "speculative_model_dir": "/nope"}, {},
         "speculative_model_dir: no such directory"),
        ("pytorch", {"decoding_type": "MTP"}, {"mode": "ngram"}, "are both set"),
    ],
)
def test_bad_speculative_configs(model_dir: str, backend: str, spec: dict[str, Any], gateway: dict[str, Any],
                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrtllmExecutor.from_config(executor_config(model_dir, options={"backend": backend, "speculative": spec},
                                                   speculative=gateway))
