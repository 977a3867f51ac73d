"""Atomic file writes: write to a temporary name in the target folder, then rename into place."""
from __future__ import annotations

import os
import tempfile


def process_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux); else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


TMP_PREFIX = ".tmp-"  # temporary files of atomic_write: TMP_PREFIX + 8 random characters + the final name
STALE_TMP_SECONDS = 3600  # a temporary file untouched this long belongs to a save that was killed


def is_temp_name(name: str) -> bool:
    """True for the names of atomic_write's temporary files (never real models: do not list them)."""
    return os.path.basename(name).startswith(TMP_PREFIX)


def remove_stale_temps(path: str | os.PathLike, age: float = STALE_TMP_SECONDS) -> list[str]:
    """Delete the temporary files that killed saves of ``path`` left beside it (our naming only, untouched for
    ``age`` seconds, so a save still running elsewhere keeps its file). Returns what was removed."""
    import re
    import time

    path = os.fspath(path)
    folder, base = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    pattern = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(base) + r"\Z")
    removed, now = [], time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for n in names:
        if pattern.match(n):
            p = os.path.join(folder, n)
            try:
                if now - os.lstat(p).st_mtime >= age:
                    os.unlink(p)
                    removed.append(p)
            except OSError:
                pass
    return removed


def _limit(folder: str, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError, AttributeError):
        return default


def check_paths_fit(paths, what: str, extra_name_chars: int = 0) -> None:
    """Raise InputError unless every path in ``paths``, and the temporary name atomic_write gives it, fits the file
    system's limits on a name and a path (checked before any work, so nothing is lost to a name that fails at
    the end). ``extra_name_chars``: room to keep for names made inside a path later (a cache folder's files)."""
    from .errors import InputError

    for p in paths:
        p = os.path.abspath(os.fspath(p))
        folder = os.path.dirname(p)
        while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)  # the nearest existing folder holds the file system's limits
        name_max, path_max = _limit(folder, "PC_NAME_MAX", 255), _limit(folder, "PC_PATH_MAX", 4096)
        tmp_name = TMP_PREFIX + "x" * 8 + os.path.basename(p)
        longest = max(len(os.fsencode(tmp_name)), len(os.fsencode(os.path.basename(p))) + extra_name_chars)
        if longest > name_max or len(os.fsencode(p)) + len(TMP_PREFIX) + 8 + extra_name_chars >= path_max:
            over = longest - name_max
            raise InputError(f"{what}: the name is too long for this file system: {os.path.basename(p)!r} and its "
                             f"temporary name need {longest} characters, the limit is {name_max}"
                             + (f" (shorten it by {over})" if over > 0 else f"; the full path must stay under "
                                f"{path_max} characters"))


def atomic_write(path: str | os.PathLike, write_fn) -> str:
    """Call write_fn(tmp_path) then rename tmp_path to path; the temp file is removed on failure. Temporary
    files that killed earlier saves of the same path left behind are removed first. An OSError (read-only or
    full destination) names ``path``, not the temporary file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(path), dir=folder)
        os.close(fd)
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        fn = getattr(e, "filename", None)
        if isinstance(e, OSError) and e.errno is not None and (
                fn is None or fn == folder or (isinstance(fn, str) and is_temp_name(fn))):
            raise type(e)(e.errno, e.strerror, path) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write a text file (UTF-8) through atomic_write."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)
