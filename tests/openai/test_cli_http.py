"""`trt-gateway serve` as a user runs it, on the default (demo) model, answering HTTP the way `curl` and the OpenAI
SDK ask: /health, chat and text completions, streamed and not, and a clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_default_model_over_http(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "trt_gateway.cli", "serve", "--port", str(grpc_port), "--http-port", str(http_port)]
    # Offline with an empty cache: the default model falls back to the committed demo model, whatever this machine has.
    env = {**os.environ, "TRT_GATEWAY_OFFLINE": "1", "TRT_GATEWAY_CACHE": str(tmp_path)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.2)
        # what `curl -d '{...}' localhost:8000/v1/chat/completions` sends
        body = {"model": "demo", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 12, "temperature": 0}
        whole = httpx.post(url + "/v1/chat/completions", content=json.dumps(body),
                           headers={"content-type": "application/json"}).json()
        text = whole["choices"][0]["message"]["content"]
        assert text and whole["usage"]["completion_tokens"] <= 12
        with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
            streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="demo", messages=body["messages"], max_tokens=12, temperature=0, stream=True) if c.choices)
            assert streamed == text
            done = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=6, temperature=0)
            assert done.choices[0].text and done.choices[0].finish_reason in ("length", "stop")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
