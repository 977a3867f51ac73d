"""A lock held for the life of a run, so two runs never write the same files at once.

The lock is an OS file lock (flock / msvcrt) on ``<path>``: the OS releases it when the holding process ends,
however it ends, so a lock left by a killed run never blocks. The holder's pid is written into the file for the
error message; a lock file whose recorded process is gone is taken over. The holder removes the file when done.
"""
from __future__ import annotations

import contextlib
import os

from .errors import InputError
from .hub.download import _try_lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _recorded_pid(path: str) -> int | None:
    try:
        with open(path, "r", encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, what: str):
    """Hold the lock ``path`` for the duration; InputError naming ``what`` when another live process holds it."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    f = open(path, "a+", encoding="ascii")
    try:
        if not _try_lock(f):
            pid = _recorded_pid(path)
            f.close()
            alive = pid is not None and _pid_alive(pid)
            raise InputError(f"{what}: another run is writing it right now" + (f" (process {pid})" if alive else "")
                             + f"; wait until it finishes, or choose another name (lock file {path})")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield path
    finally:
        if not f.closed:  # ours: remove it while still holding it (a non-waiting lock, so this is safe), then release
            with contextlib.suppress(OSError):
                os.unlink(path)
            f.close()
