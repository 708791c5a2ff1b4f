"""Where the `metaal` commands write: checked before any compute, locked, never silently replaced.

    with claim(out, holds=("results.csv",), fix="choose another --out"):
        ...compute, then write into out...

`claim` refuses, before anything is computed, an output folder that is an
existing file, that cannot be created or written (`/proc/x`, a read-only
disk), or that already holds what the run would write. It takes the
folder's lock file (`LOCK_FILE`, created with `O_EXCL`, holding the pid), so
a second run on the same folder stops at once instead of overwriting the
first; the lock goes when the run ends, however it ends. A lock left by a
killed run (its pid no longer runs) is taken over with a warning. When the
run fails, the folders `claim` created are removed again if still empty, so
a refused input leaves nothing behind. `check_output_file` does the same
checks for a single output file (`metaal query --out`).

`command(name)` wraps a subcommand's `main`: bad input (any `ValueError`,
`DataError` and `OutputError` included) prints one line
`metaal <name>: error: <message>` and returns 2, an `OSError` prints one
line naming its path and returns 1, Ctrl-C prints one line and returns 130.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from metaal.atomic import temporary_path

#: The lock file of an output folder: the pid of the run writing there.
LOCK_FILE = ".lock"
#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


class OutputError(ValueError):
    """An output path that cannot be used; the message names the path and the fix."""


def os_error_line(err: OSError, path: str | Path | None = None) -> str:
    """One line for an `OSError`: the path it concerns and the system's reason."""
    where = path if path is not None else (err.filename or "")
    reason = err.strerror or str(err)
    return f"{where}: {reason}" if where else reason


def fresh_folder(parent: str | Path, stem: str, when: float | None = None) -> Path:
    """`parent/<stem>__<unix time>`, a folder that does not exist yet (-2, -3... if it does)."""
    safe = stem.replace("/", "-").replace(" ", "_")
    base = Path(parent) / f"{safe}__{int(time.time() if when is None else when)}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _make_folders(folder: Path, flag: str) -> list[Path]:
    """Create `folder` and its missing parents; returns those created, deepest first."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"{flag} {folder}: is an existing file, not a folder; choose a folder path "
            "(or move the file away)"
        )
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"{flag} {folder}: cannot create this folder ({os_error_line(err)}); choose a "
            "writable path"
        ) from err
    return missing


def _remove_if_empty(folders: Sequence[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _take_lock(folder: Path, flag: str) -> Path:
    """Create `folder/LOCK_FILE` holding our pid; refuse if a live run holds it."""
    lock = folder / LOCK_FILE
    for _ in range(3):  # a stale lock is removed, then taken; a race with another run retries
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_owner(lock)
            if pid is not None and _pid_alive(pid):
                raise OutputError(
                    f"{flag} {folder}: another metaal run (pid {pid}) is writing to this folder; "
                    f"wait for it to finish or choose another {flag}"
                ) from None
            print(
                f"warning: {folder}: taking over the lock of pid {pid}, which no longer runs "
                "(a killed run)",
                file=sys.stderr,
            )
            lock.unlink(missing_ok=True)
            continue
        except OSError as err:
            raise OutputError(
                f"{flag} {folder}: cannot write in this folder ({os_error_line(err)}); choose a "
                "writable path"
            ) from err
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    raise OutputError(f"{flag} {folder}: could not take its lock file {lock}; try again")


@contextlib.contextmanager
def claim(
    folder: str | Path,
    flag: str = "--out",
    holds: Sequence[str] = (),
    fix: str = "",
    overwrite: bool = False,
) -> Iterator[Path]:
    """Make `folder` this run's output folder, locked for the run (see the module docstring).

    `holds` names files whose presence means the folder already holds results:
    refused with `fix` as the advice, unless `overwrite`.
    """
    folder = Path(folder)
    # checked before the folder is touched, so a refusal changes nothing in it
    found = [name for name in holds if (folder / name).exists()] if folder.is_dir() else []
    if found and not overwrite:
        raise OutputError(
            f"{flag} {folder}: already holds results ({', '.join(found)}); "
            f"{fix or f'choose another {flag}'}"
        )
    created = _make_folders(folder, flag)
    finished = False
    try:
        lock = _take_lock(folder, flag)
        try:
            yield folder
            finished = True
        finally:
            lock.unlink(missing_ok=True)
    finally:
        if not finished:
            _remove_if_empty(created)


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any compute, an output file path that is a folder or cannot be written.

    Missing parent folders are created (and removed again if the probe fails).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"{flag} {path}: is a folder; give a file path, e.g. {path / 'picks.csv'}"
        )
    created = _make_folders(path.parent, flag)
    probe = temporary_path(path)
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        _remove_if_empty(created)
        raise OutputError(
            f"{flag} {path}: cannot write this file ({os_error_line(err, path.parent)}); "
            "choose a writable path"
        ) from err
    return path


def command(name: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a subcommand's `main(args)` with the one error format (see the module docstring).

    A `KeyboardInterrupt` raised with a message (e.g. `metaal train`'s resume
    hint) prints that message instead of the plain "interrupted".
    """

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return int(main(*args, **kwargs) or 0)
            except KeyboardInterrupt as err:
                print(err.args[0] if err.args else f"metaal {name}: interrupted", file=sys.stderr)
                return INTERRUPTED
            except ValueError as err:  # DataError, CheckpointError, OutputError: bad input
                print(f"metaal {name}: error: {err}", file=sys.stderr)
                return 2
            except OSError as err:
                print(f"metaal {name}: error: {os_error_line(err)}", file=sys.stderr)
                return 1

        return run

    return decorate
