"""Atomic file writes: a file is either absent, its previous version, or complete.

Every result file metaal writes (CSVs, reports, plots, policy files, config
and metrics files) is written to a temporary file in the same folder and
renamed into place with `os.replace`, which is atomic on POSIX file systems.
A process killed mid-write (SIGKILL, power loss of the process) therefore
never leaves a half-written file under the final name; at worst a
`.tmp-<pid>-<name>` file is left beside it.

    with replacing(path) as tmp:   # for writers that take a path (to_csv, savefig)
        frame.to_csv(tmp, index=False)
    write_text(path, text)
    write_bytes(path, data)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temporary_path(path: str | Path) -> Path:
    """The temporary sibling of `path` (same folder, same suffix, so writers keep the format)."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def append_line(path: str | Path, line: str) -> Path:
    """Append one line to a text file by rewriting it atomically (for small log files)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    return write_text(path, old + line.rstrip("\n") + "\n")
