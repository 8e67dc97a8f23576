"""The gauges inference routers read (GAIE model-server protocol, `vllm:` names) on the HTTP port's /metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from trt_gateway.config import LoraConfig
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.testing import LiveGateway

DEMO = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo"


def samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url + "/metrics").text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_waiting_counts_the_admission_queue() -> None:
    gateway = LiveGateway(
        EchoExecutor({"token_delay_s": 0.02}), server={"http": True, "http_port": 0}, admission={"max_inflight": 1}
    )
    with gateway:
        url = f"http://127.0.0.1:{gateway.server.http_port}"
        body = {"model": "echo", "prompt": "abc", "max_tokens": 40, "ignore_eos": True}
        threads = [threading.Thread(target=httpx.post, args=(url + "/v1/completions",), kwargs={"json": body})
                   for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline:
            s = samples(url)
            seen = (s["vllm:num_requests_running"][0][1], s["vllm:num_requests_waiting"][0][1])
            if seen == (1.0, 1.0):
                break
            time.sleep(0.01)
        for t in threads:
            t.join()
        assert seen == (1.0, 1.0)
        assert samples(url)["vllm:num_requests_waiting"][0] == ({"model_name": "echo"}, 0.0)


def test_kv_cache_and_lora_gauges_of_the_native_engine() -> None:
    lora = LoraConfig(adapter_roots=(str(DEMO / "adapters"),), max_loras=1, max_lora_rank=16)
    executor = NativeExecutor(DEMO / "target", options={"device": "cpu"}, lora=lora)
    lora_section = {"adapter_roots": [str(DEMO / "adapters")], "adapters": {"uppercase": str(DEMO / "adapters" /
                                                                                              "uppercase")}}
    gateway = LiveGateway(executor, server={"http": True, "http_port": 0}, executor={"lora": lora_section})
    with gateway:
        url = f"http://127.0.0.1:{gateway.server.http_port}"
        with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0) as client:
            assert [(m.id, m.model_extra["parent"]) for m in client.models.list()] == [  # type: ignore[index]
                ("demo", None), ("uppercase", "demo")]
            r = client.completions.create(model="uppercase", prompt="hello", max_tokens=4, temperature=0)
            assert r.model == "uppercase" and r.usage is not None and r.usage.completion_tokens == 4
        s = samples(url)
        (labels, _), = s["vllm:cache_config_info"]
        assert int(labels["num_gpu_blocks"]) > 0 and int(labels["block_size"]) > 0
        assert 0.0 <= s["vllm:kv_cache_usage_perc"][0][1] <= 1.0
        (lora_labels, stamp), = s["vllm:lora_requests_info"]
        assert lora_labels["max_lora"] == "1" and lora_labels["running_lora_adapters"] == "" and stamp > 0
        assert s["trt_gateway_adapter_requests_total"] == [({"model": "demo", "adapter": "uppercase"}, 1.0)]
