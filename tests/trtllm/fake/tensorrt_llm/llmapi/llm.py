"""`tensorrt_llm.llmapi.llm` [LLM-a]: the LLM classes and RequestOutput."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tensorrt_llm import _fake
from tensorrt_llm.executor.executor import GenerationExecutor
from tensorrt_llm.executor.request import LoRARequest
from tensorrt_llm.executor.result import GenerationResult, IterationResult
from tensorrt_llm.llmapi.llm_args import TRT_ONLY_FIELDS, BaseLlmArgs, TorchLlmArgs, TrtLlmArgs
from tensorrt_llm.sampling_params import SamplingParams


class RequestOutput(GenerationResult):
    """Created internally by generate_async; `__init__` raises, as in the real class."""

    def __init__(self) -> None:
        raise RuntimeError("RequestOutput can only be created by the LLM")

    @property
    def prompt(self) -> str | None:
        return self._prompt

    def _init(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        GenerationResult._init(self, *args, **kwargs)
        self._prompt: str | None = None


class FakeTokenizer:
    """A byte tokenizer in the shape of TensorRT-LLM's TransformersTokenizer (encode/decode, HF-style attributes)."""

    eos_token_id = _fake.EOS
    pad_token_id = _fake.PAD
    bos_token_id = _fake.BOS
    vocab_size = _fake.VOCAB_SIZE
    chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant: "

    def __len__(self) -> int:
        return _fake.VOCAB_SIZE

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        return ([_fake.BOS] if add_special_tokens else []) + _fake.encode(text)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return _fake.decode(list(token_ids))

    def apply_chat_template(self, conversation: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = True, **kwargs: Any) -> Any:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in conversation) + ("assistant: " if add_generation_prompt else "")
        return self.encode(text, add_special_tokens=False) if tokenize else text


class BaseLLM:
    llm_args_cls: type[BaseLlmArgs] = TorchLlmArgs
    backend = "pytorch"

    def __init__(self, model: str, tokenizer: Any = None, tokenizer_mode: str = "auto",
                 skip_tokenizer_init: bool = False, trust_remote_code: bool = False, tensor_parallel_size: int = 1,
                 dtype: str = "auto", revision: str | None = None, tokenizer_revision: str | None = None,
                 **kwargs: Any) -> None:
        self._executor: GenerationExecutor | None = None
        kwargs.pop("backend", None)  # deprecated; _TorchLLM pops it
        for key in kwargs:
            if key not in self.llm_args_cls.model_fields:
                if key in TRT_ONLY_FIELDS:
                    raise ValueError(f"{key} is only supported by the TensorRT backend; "
                                     "use tensorrt_llm._tensorrt_engine.LLM instead")
                raise ValueError(f"LLM got invalid argument: {key}")
        self.args = self.llm_args_cls(
            model=str(model), tokenizer=tokenizer, tokenizer_mode=tokenizer_mode,
            skip_tokenizer_init=skip_tokenizer_init, trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size, dtype=dtype, revision=revision,
            tokenizer_revision=tokenizer_revision, **kwargs,
        )
        if not os.path.isdir(model):
            raise ValueError(f"Failed to load the model: {model} is neither a local directory nor a reachable HF id")
        if not (Path(model) / "config.json").is_file():
            raise ValueError(f"{model} does not contain config.json")
        json.loads((Path(model) / "config.json").read_text())
        if _fake.CONTROL.init_error is not None:
            raise _fake.CONTROL.init_error
        self._tokenizer = None if skip_tokenizer_init else FakeTokenizer()
        self.llm_id = f"double-{os.getpid()}-{int(time.time() * 1000)}"
        self._executor = GenerationExecutor(self.args)
        _fake.CONTROL.llms.append(self)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def __enter__(self) -> BaseLLM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __reduce__(self) -> Any:
        raise RuntimeError("LLM object can not be pickled.")

    def generate(self, inputs: Any, sampling_params: Any = None, use_tqdm: bool = True, lora_request: Any = None,
                 prompt_adapter_request: Any = None, kv_cache_retention_config: Any = None,
                 disaggregated_params: Any = None, scheduling_params: Any = None, cache_salt: Any = None) -> Any:
        raise NotImplementedError("the double does not simulate the blocking generate(); use generate_async")

    def generate_async(self, inputs: Any, sampling_params: SamplingParams | None = None,
                       lora_request: LoRARequest | None = None, prompt_adapter_request: Any = None,
                       streaming: bool = False, kv_cache_retention_config: Any = None,
                       disaggregated_params: Any = None, _postproc_params: Any = None,
                       scheduling_params: Any = None, cache_salt: str | None = None) -> RequestOutput:
        if self._executor is None or self._executor.is_shutdown():
            raise RuntimeError("LLM is shutting down")
        _fake.CONTROL.submissions.append({
            "inputs": inputs, "sampling_params": sampling_params, "lora_request": lora_request,
            "streaming": streaming, "cache_salt": cache_salt, "scheduling_params": scheduling_params,
        })
        if isinstance(inputs, str):
            prompt, prompt_ids = inputs, None
        elif isinstance(inputs, list) and all(isinstance(t, int) for t in inputs):
            prompt, prompt_ids = None, list(inputs)
        elif isinstance(inputs, dict) and ("prompt" in inputs or "prompt_token_ids" in inputs):
            prompt, prompt_ids = inputs.get("prompt"), inputs.get("prompt_token_ids")
        else:
            raise TypeError(f"The inputs must be type str or list of int, but got {type(inputs)}")
        sp = self._prepare_sampling_params(sampling_params)
        if prompt_ids is None:
            if self._tokenizer is None:
                raise ValueError("tokenizer is required for text prompts")
            prompt_ids = self._tokenizer.encode(prompt or "", add_special_tokens=sp.add_special_tokens)
        if lora_request is not None:
            if not isinstance(lora_request, LoRARequest):
                raise TypeError("lora_request must be a LoRARequest")
            if self.args.lora_config is None:
                raise ValueError("LoRA request given, but the LLM was built without lora_config")
        if sp.guided_decoding is not None and self.args.guided_decoding_backend is None:
            raise ValueError("guided decoding needs guided_decoding_backend set on the LLM")
        self._check_arguments(prompt_ids, sp)
        result = self._executor.submit(RequestOutput, sp, prompt_ids, self._tokenizer, streaming)
        assert isinstance(result, RequestOutput)
        result._prompt = prompt
        return result

    def _prepare_sampling_params(self, sampling_params: SamplingParams | None) -> SamplingParams:
        if sampling_params is None:
            sampling_params = SamplingParams()
        if not isinstance(sampling_params, SamplingParams):
            raise TypeError(f"The sampling_params must be type SamplingParams or None, but got {type(sampling_params)}")
        if sampling_params.end_id is None:
            sampling_params._setup(self._tokenizer)
        sampling_params._stream_interval = getattr(self.args, "stream_interval", 1)
        sampling_params.return_perf_metrics = sampling_params.return_perf_metrics or self.args.return_perf_metrics
        return sampling_params

    def _check_arguments(self, prompt_ids: list[int], sp: SamplingParams) -> None:
        limit = self.args.max_num_tokens
        if not self.args.enable_chunked_prefill and limit is not None and len(prompt_ids) > limit:
            raise ValueError(f"The sum of prompt length ({len(prompt_ids)}) should not exceed max_num_tokens ({limit})")
        if self.backend == "tensorrt" and sp.logprobs and not self.args.gather_generation_logits:
            raise ValueError("logprobs on the TRT backend need gather_generation_logits=True")

    def get_stats(self, timeout: float = 2) -> list[dict[str, Any]]:
        assert self._executor is not None
        out = list(self._executor.stats)
        self._executor.stats.clear()
        return out

    def get_stats_async(self, timeout: float = 2) -> IterationResult:
        assert self._executor is not None
        return IterationResult(self._executor.stats, timeout)


class _TorchLLM(BaseLLM):
    llm_args_cls = TorchLlmArgs
    backend = "pytorch"


class _TrtLLM(BaseLLM):
    llm_args_cls = TrtLlmArgs
    backend = "tensorrt"


class LLM(_TorchLLM):
    pass
