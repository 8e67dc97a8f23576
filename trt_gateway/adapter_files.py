"""Reading an adapter's files without following a symlink anywhere, on every read.

`adapter_paths.confine` checks an adapter's directory once, when it is loaded, and hands on its resolved path (no
symlink left in it). Its files are read later too (an evicted adapter is read again on its next use), and anything
on the way may have changed by then: the directory swapped for a symlink to elsewhere, a parent directory swapped, a
file replaced by a symlink to a secret. So every read walks the resolved path from `/`, one component at a time,
opening each relative to the one before (`dir_fd`) with O_NOFOLLOW, opens the file the same way, and reads from that
descriptor. A symlink anywhere on the way is refused, whatever happens between the check and the read, so a read can
only reach the very files that were confined. Files must be regular files (no FIFOs, devices, or symlinks, even ones
that point inside the adapter roots: copy the files instead).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


class Unreadable(Exception):
    """An adapter file that may not or cannot be read. `reason` names the file, never its contents."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


@contextlib.contextmanager
def open_file(directory: str, name: str) -> Iterator[int]:
    """A read-only descriptor of `directory/name`, reached without following any symlink."""
    path = PurePosixPath(directory)
    if not path.is_absolute() or ".." in path.parts or "/" in name or name in ("", ".", ".."):
        raise Unreadable(f"{name}: the adapter directory must be an absolute resolved path")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in path.parts[1:]:
            fd = _step(fd, part, _DIR_FLAGS, f"{name}: the adapter directory")
        fd = _step(fd, name, _FILE_FLAGS, name)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable(f"{name} is not a regular file")
        yield fd
    finally:
        os.close(fd)


def _step(parent: int, part: str, flags: int, what: str) -> int:
    """Open `part` under `parent`; closes `parent` only on success (the caller closes it on failure)."""
    try:
        child = os.open(part, flags, dir_fd=parent)
    except FileNotFoundError:
        raise Unreadable(f"{what} is missing", missing=True) from None
    except OSError as exc:  # ELOOP (a symlink, with O_NOFOLLOW), ENOTDIR (a symlink or file where a directory was)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise Unreadable(f"{what} is, or lies under, a symbolic link (changed since it was loaded?)") from None
        raise Unreadable(f"{what} cannot be opened ({os.strerror(exc.errno or 0)})") from None
    os.close(parent)
    return child


def read_file(directory: str, name: str, max_bytes: int) -> bytes:
    """The whole of `directory/name` (see `open_file`), refused beyond `max_bytes`."""
    with open_file(directory, name) as fd:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise Unreadable(f"{name} is {size} bytes, over the limit of {max_bytes}")
        chunks, left = [], size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def check_file(directory: str, name: str) -> None:
    """Raise Unreadable unless `directory/name` can be read as `read_file` would (without reading it)."""
    with open_file(directory, name):
        pass
