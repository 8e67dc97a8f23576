"""`trt-gateway serve | generate | health | models | tokenize`.

Every `serve` flag has a config-file twin (`--config FILE`, TOML or JSON); flags given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from trt_gateway import __version__, errors
from trt_gateway.config import ConfigError, from_mapping, load_file, merge

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


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve a model over gRPC (default: the embedded demo model)")
    p.add_argument("--config", help="TOML or JSON config file; flags override it")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 50051; 0 picks a free one)")
    p.add_argument("--http-port", type=int,
                   help="OpenAI-compatible HTTP API port, also serving /metrics (default 8000; 0 picks a free one)")
    p.add_argument("--no-http", dest="http", action="store_false", default=None, help="no HTTP API")
    p.add_argument("--metrics-port", type=int, help="a separate Prometheus /metrics port (default: off)")
    p.add_argument("--executor", help="executor name: native (default), trtllm, vllm, echo, or a plug-in")
    p.add_argument("--model", help="HF checkpoint directory (default: the embedded demo model)")
    p.add_argument("--served-name", help="model name clients use (default: the checkpoint directory name)")
    p.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="executor-specific option (value parsed as JSON when it parses); repeatable")
    p.add_argument("--quantization", choices=("fp8",),
                   help="FP8 weights (native on Hopper GPUs, or vLLM); the same as --option quantization=fp8")
    p.add_argument("--adapter-root", action="append", default=[], metavar="DIR",
                   help="directory LoRA adapter paths must lie under; repeatable")
    p.add_argument("--adapter", action="append", type=_key_value, default=[], metavar="NAME=DIR",
                   help="preload a LoRA adapter; repeatable")
    p.add_argument("--max-loras", type=int, help="adapters resident in executor slots")
    p.add_argument("--max-cpu-loras", type=int, help="adapters cached in host memory")
    p.add_argument("--max-lora-rank", type=int, help="largest LoRA rank accepted")
    p.add_argument("--speculative", choices=("ngram", "draft"), help="speculative decoding mode")
    p.add_argument("--draft-model", help="draft checkpoint directory for --speculative draft")
    p.add_argument("--num-draft-tokens", type=int, help="speculative tokens per step")
    p.add_argument(
        "--speculative-max-batch", type=int, help="draft only while at most this many sequences run (default 8)"
    )
    p.add_argument("--max-inflight", type=int, help="requests handed to the executor at once")
    p.add_argument("--max-queued", type=int, help="requests waiting beyond that before RESOURCE_EXHAUSTED")
    p.add_argument("--max-queued-tokens", type=int, help="tokens the waiting requests may need, at most")
    p.add_argument("--grace-period", type=float, help="seconds in-flight streams get on SIGTERM")
    p.add_argument("--stall-timeout", type=float, help="abort a stream whose client reads nothing this long (0 = never)")
    p.add_argument("--stream-coalesce-tokens", type=int,
                   help="merge deltas queued behind a lagging stream into chunks of up to N tokens (1 = off; "
                   "default 64)")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop"), help="event loop (uvloop: pip install uvloop)")
    p.add_argument("--log-requests", action="store_true", default=None,
                   help="log prompts and outputs (off by default: they may hold user data)")
    p.add_argument("--api-key", action="append", default=[], help="require this API key; repeatable")
    p.add_argument("--tls-cert", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--log-level", default="INFO")


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
    options = {k: _option_value(v) for k, v in args.option}
    put(options, "quantization", args.quantization)
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
    try:
        return run(config)
    except ConfigError as exc:  # raised while building the executor, e.g. an unknown name or option
        print(f"trt-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except (errors.GatewayError, OSError) as exc:
        print(f"trt-gateway: cannot start: {exc}", file=sys.stderr)
        return 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trt-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"trt-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_generate(sub)
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
            "tokenize": cmd_tokenize}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
