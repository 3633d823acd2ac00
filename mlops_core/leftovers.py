"""Temporaries left behind by killed writers, and how ``mlops gc`` finds them without touching live writes.

Every atomic write in the project goes through a temporary sibling that is renamed
into place at the end: bundle folders (``.<name>.tmp-<uuid>``), pulled bundles in
the cache, blobs of a local store (``<key>.tmp-<uuid>``), replaced folders on their
way out (``.old-`` / ``.trash-``). A ``kill -9`` in the middle leaves them behind.

A temporary is a leftover when all of these hold:

* its name has the temporary shape (``.tmp-``, ``.old-`` or ``.trash-`` and 32 hex digits);
* nothing in it changed for ``older_than`` seconds (default one hour): a live
  writer keeps touching it;
* no process holds its advisory lock: writers hold a shared ``flock`` on the
  temporary while they write (:func:`writing`), the kernel drops it when the
  writer dies, and a collector takes the lock exclusively, without waiting, before
  it deletes anything.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Iterator

import attrs

__all__ = ["TEMP_NAME", "DEFAULT_OLDER_THAN", "Leftover", "writing", "is_locked", "find_leftovers", "remove",
           "parse_age"]

TEMP_NAME = re.compile(r".*\.(tmp|old|trash)-[0-9a-f]{32}")
#: Temporaries younger than this (seconds) are never collected.
DEFAULT_OLDER_THAN = 3600.0


@attrs.frozen
class Leftover:
    """A temporary that ``mlops gc`` would remove: where, what, bytes, and seconds since it last changed."""

    where: str
    kind: str
    size: int
    age_s: float


def parse_age(value: str | float | int) -> float:
    """``3600``, ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` -> seconds (>= 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(value))
        if not m:
            from .errors import InvalidInputError

            raise InvalidInputError(f"invalid age {value!r}", hint="use seconds, or a number with s, m, h or d (1h)")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds < 0:
        from .errors import InvalidInputError

        raise InvalidInputError(f"invalid age {value!r}", hint="ages are >= 0")
    return seconds


def _flock(fd: int, flags: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, flags)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Hold a shared advisory lock on the temporary ``path`` (file or folder) while writing it.

    A no-op where ``flock`` does not exist; the age rule still protects live writes there.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        _flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # also releases the lock


def is_locked(path: Path) -> bool:
    """True when a live writer holds the lock of ``path`` (we cannot take it exclusively)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        return not _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _tree_stats(path: Path) -> tuple[int, float]:
    """(bytes, newest mtime) of a file or a folder tree, symlinks not followed."""
    st = os.lstat(path)
    size, newest = (st.st_size if stat.S_ISREG(st.st_mode) else 0), st.st_mtime
    if stat.S_ISDIR(st.st_mode):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    s = os.lstat(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                newest = max(newest, s.st_mtime)
                if stat.S_ISREG(s.st_mode):
                    size += s.st_size
    return size, newest


def find_leftovers(root: Path, older_than: float = DEFAULT_OLDER_THAN, *, now: float | None = None) -> list[Leftover]:
    """Temporaries under ``root`` that are older than ``older_than`` seconds and not locked by a writer."""
    root = Path(root)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    found: list[Leftover] = []
    for current, dirs, files in os.walk(root):
        for name in list(dirs) + files:
            if not TEMP_NAME.fullmatch(name):
                continue
            path = Path(current, name)
            if name in dirs:
                dirs.remove(name)  # its contents belong to it
            try:
                size, newest = _tree_stats(path)
            except FileNotFoundError:  # renamed into place meanwhile
                continue
            age = now - newest
            if age < older_than or is_locked(path):
                continue
            kind = "temporary folder" if path.is_dir() else "temporary file"
            found.append(Leftover(where=str(path), kind=kind, size=size, age_s=round(age, 1)))
    return sorted(found, key=lambda lo: lo.where)


def remove(leftover: Leftover) -> None:
    """Delete one leftover found by :func:`find_leftovers` (again refusing one a writer locked meanwhile)."""
    path = Path(leftover.where)
    if not TEMP_NAME.fullmatch(path.name) or is_locked(path):
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
