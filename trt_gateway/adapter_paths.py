"""Adapter names and paths: validated before any executor touches the filesystem.

A LoRA path from a client is untrusted. It must resolve (symlinks followed) to a directory under one of the
configured adapter roots, and may not contain `..` at all, so neither a relative escape nor a symlink escape can
make the server read arbitrary files. The files in it are then read through `adapter_files`, which follows no
symlink at all, on every read (so a directory swapped after this check is not read).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from trt_gateway import errors
from trt_gateway.config import ADAPTER_NAME_RE
from trt_gateway.errors import quote

MAX_PATH_CHARS = 4096  # Linux's PATH_MAX: a longer path cannot name anything


def check_name(name: str, field: str = "name") -> None:
    if not ADAPTER_NAME_RE.fullmatch(name):  # not .match: "$" accepts a trailing "\n"
        raise errors.InvalidArgument(
            f"{field} must match {ADAPTER_NAME_RE.pattern}, got {quote(name)}", field=field
        )


def no_roots(field: str = "path") -> errors.FailedPrecondition:
    return errors.FailedPrecondition(
        "loading adapters by path is disabled: the server has no adapter roots "
        "(set executor.lora.adapter_roots in the config, or --adapter-root DIR)",
        field=field,
    )


def confine(path: str, roots: Sequence[str], field: str = "path", *, relative_to_cwd: bool = False) -> str:
    """Return the resolved directory, or raise if it lies outside every root.

    A relative path is looked for under each root in turn (the first that has it wins): a client cannot know the
    server's working directory. With `relative_to_cwd` (adapters named on the command line or in the config file,
    like every other path there) the working directory is tried first.
    """
    if not roots:
        raise no_roots(field)
    if not path:
        raise errors.InvalidArgument(f"{field} must not be empty", field=field)
    if "\x00" in path:  # the OS cannot take it: os.path would raise ValueError, a bug (INTERNAL) at the boundary
        raise errors.InvalidArgument(f"{field} must not contain a NUL character, got {quote(path, 200)}", field=field)
    if ".." in PurePath(path).parts:
        raise errors.InvalidArgument(f"{field} must not contain '..', got {quote(path, 200)}", field=field)
    if len(path) > MAX_PATH_CHARS:
        raise errors.InvalidArgument(f"{field} must be at most {MAX_PATH_CHARS} characters, got {len(path)}", field=field)
    try:
        candidate = Path(path) if os.path.isabs(path) else _relative(path, roots, field, relative_to_cwd)
        resolved = Path(os.path.realpath(candidate))
        real_roots = [Path(os.path.realpath(r)) for r in roots]
        if not any(resolved == root or resolved.is_relative_to(root) for root in real_roots):
            raise errors.InvalidArgument(
                f"{field} {quote(path, 200)} resolves to {quote(str(resolved), 200)}, outside the adapter roots "
                f"({', '.join(map(str, roots))})",
                field=field,
            )
        if not resolved.is_dir():
            raise errors.InvalidArgument(
                f"{field} {quote(path, 200)} ({quote(str(resolved), 200)}) is not a directory", field=field
            )
    except OSError as exc:  # a component over NAME_MAX, a loop of links: the client's path, not a server fault
        raise errors.InvalidArgument(f"{field} {quote(path, 200)} cannot be resolved: {exc.strerror}", field=field) from None
    return str(resolved)


def _relative(path: str, roots: Sequence[str], field: str, relative_to_cwd: bool) -> Path:
    bases = ([Path.cwd()] if relative_to_cwd else []) + [Path(r) for r in roots]
    for base in bases:
        if (base / path).exists():
            return base / path
    tried = ", ".join(str(base / path)[:200] for base in bases[:4])
    where = "the working directory and then under each adapter root" if relative_to_cwd else "under each adapter root"
    raise errors.InvalidArgument(
        f"{field} {quote(path, 200)} is relative, so it was looked for {where}; none exists: {tried}", field=field
    )
