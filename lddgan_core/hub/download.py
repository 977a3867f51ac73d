"""Verified HTTP(S) downloads with resume, standard library only (urllib).

    sha = download_file(url, "models/lddgan/official/netG_950.pth", size=None, sha256=None,
                        progress=lambda done, total: ...)

* The bytes go to ``<path>.part`` in the target folder; an interrupted download leaves that file (and a
  small ``<path>.part.json`` with the server's validators) so the next call resumes it with
  ``Range: bytes=N-`` (RFC 9110 §14). ``If-Range`` carries the first response's strong ETag or
  Last-Modified, so a file that changed on the server is fetched again from the start instead of being
  spliced onto stale bytes. A server that ignores ranges (200 instead of 206) also restarts from zero.
* When the transfer is complete the size and the sha256 are checked (when known); on a mismatch the partial
  file is deleted and nothing is left behind. Only then is ``.part`` renamed to ``path`` (atomic in one folder).
* Every failure is a :class:`DownloadError` (a ValueError, like all lddgan_core errors) naming the URL, what
  happened, and the exact path to save the file to by hand.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Callable

from ..errors import LDDGANError
from ..version import __version__

Progress = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None when unknown)
CHUNK = 1 << 20


class DownloadError(LDDGANError):
    """A download failed: offline, refused, HTTP error, interrupted, or the bytes did not verify."""

    def __init__(self, message: str, *, url: str = "", path: str = "", retryable: bool = False):
        super().__init__(message)
        self.url, self.path, self.retryable = url, path, retryable


def _by_hand(url: str, path: str) -> str:
    return (f"To install it by hand, download {url} (e.g. in a browser) and save it as {path} "
            f"(folder {os.path.dirname(path)}), then run again.")


def sha256_file(path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _try_lock(f) -> bool:
    try:
        if os.name == "nt":
            import msvcrt
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def file_lock(path: str, wait: float = 0.0, what: str | None = None, remove: bool = True):
    """Exclusive lock on ``path`` (created if needed) so two processes (say ComfyUI and the CLI) never write
    the same file at once; waits up to ``wait`` seconds; the OS releases it if the process dies.
    ``remove``: delete the lock file afterwards (tidy, but only safe for non-waiting locks: a waiter could
    otherwise lock the unlinked file while a newcomer locks a fresh one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    f = open(path, "a+b")
    try:
        deadline = time.monotonic() + wait
        while not _try_lock(f):
            if time.monotonic() >= deadline:
                raise DownloadError(f"{what or path} is being written by another process (lock file {path}); "
                                    f"wait for it to finish and run again.")
            time.sleep(0.05)
        yield
    finally:
        f.close()
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _read_meta(meta_path: str) -> dict:
    try:
        with open(meta_path, "r", encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_meta(meta_path: str, d: dict):
    tmp = meta_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(d, f)
    os.replace(tmp, meta_path)


def _discard(*paths: str):
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def _content_range(value: str | None) -> tuple[int | None, int | None] | None:
    """'bytes START-END/TOTAL' -> (START, TOTAL); '*' (unknown total, or no range in a 416) -> None."""
    try:
        unit, rng = value.split(" ", 1)
        span, total = rng.split("/", 1)
        if unit.strip().lower() != "bytes":
            return None
        start = None if span.strip() == "*" else int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except (AttributeError, ValueError):
        return None


def _validator(headers) -> str | None:
    """A strong validator usable in If-Range (weak ETags are not allowed there)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _write_error(url: str, path: str, part: str, meta_path: str, e: OSError) -> DownloadError:
    """A destination that cannot take the file (full, over quota, read-only): the partial file is removed (it
    only takes space; a retry starts over) and the error says what to do."""
    _discard(part, meta_path)
    return DownloadError(f"could not save {url} to {path}: {e.strerror or e} (errno {e.errno}); the partial "
                         f"download was removed. Free some space or choose a writable folder, then run again.",
                         url=url, path=path, retryable=False)


class Cancelled(DownloadError):
    """The download was cancelled by its cancel callback (the partial file is kept for a resume)."""


def _attempt(url: str, path: str, part: str, meta_path: str, *, size, progress, timeout, user_agent,
             expect_binary, hasher_box, deadline=None, cancel=None, max_bytes=None, known=None) -> int:
    """One HTTP request. Appends to ``part`` (resuming when possible) and returns the total size.
    Raises DownloadError (retryable=True when a retry can resume)."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    meta = _read_meta(meta_path)
    if offset and size is not None and offset > size:
        _discard(part, meta_path)
        offset, meta = 0, {}
    if offset and meta.get("url") != url:  # bytes from another mirror / unknown origin: start over
        _discard(part, meta_path)
        offset, meta = 0, {}
    if not offset:
        hasher_box[0] = hashlib.sha256()
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) only, checked by the caller
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing after our offset: complete, or a different file
            cr = _content_range(e.headers.get("Content-Range"))
            e.close()
            if cr is not None and cr[1] == offset and (size is None or size == offset):
                return offset
            _discard(part, meta_path)
            raise DownloadError(f"{url}: the server refused to resume at byte {offset} (HTTP 416); the partial "
                                f"file was discarded", url=url, path=path, retryable=True) from None
        reason = f"HTTP {e.code} {e.reason}"
        e.close()
        raise DownloadError(f"could not download {url}: {reason}. {_by_hand(url, path)}",
                            url=url, path=path, retryable=e.code >= 500 or e.code == 429) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        why = getattr(e, "reason", e)
        raise DownloadError(f"could not download {url}: {why} (offline, blocked, or the server is down?). "
                            f"{_by_hand(url, path)}", url=url, path=path, retryable=True) from None
    with resp:
        status = resp.status
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if expect_binary and ctype in ("text/html", "application/xhtml+xml"):
            raise DownloadError(f"could not download {url}: the server sent a web page ({ctype}) instead of the "
                                f"file (a login, consent or virus-scan page?). {_by_hand(url, path)}",
                                url=url, path=path)
        enc = (resp.headers.get("Content-Encoding") or "identity").lower()
        if enc != "identity":
            raise DownloadError(f"could not download {url}: the server compressed the file ({enc}) although "
                                f"we asked for identity encoding. {_by_hand(url, path)}", url=url, path=path)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != offset:  # not the range we asked for: do not splice
                raise DownloadError(f"{url}: bad Content-Range {resp.headers.get('Content-Range')!r} for a resume "
                                    f"at byte {offset}", url=url, path=path)
            total = cr[1] if cr[1] is not None else (offset + length if length is not None else None)
            if meta.get("total") is not None and total is not None and total != meta["total"]:
                _discard(part, meta_path)  # same URL, different length: the file changed
                raise DownloadError(f"{url}: the file changed on the server ({meta['total']} -> {total} bytes); "
                                    f"starting again", url=url, path=path, retryable=True)
            mode = "ab"
        else:  # 200: full body (first request, a server without ranges, or If-Range said the file changed)
            offset, total, mode = 0, length, "wb"
            hasher_box[0] = hashlib.sha256()
        if size is not None and total is not None and total != size:
            _discard(part, meta_path)
            raise DownloadError(f"could not download {url}: the server's file has {total} bytes, the manifest "
                                f"expects {size}. {_by_hand(url, path)}", url=url, path=path)
        if known is not None:
            known[0] = total is not None or size is not None  # the size is declared: completeness can be checked
        total = total if total is not None else size
        try:
            if mode == "wb" or not meta:
                _write_meta(meta_path, {"url": url, "validator": _validator(resp.headers), "total": total})
            f = open(part, mode)
        except OSError as e:
            raise _write_error(url, path, part, meta_path, e) from None
        done = offset
        if progress:
            progress(done, total)
        cap = total if total is not None else max_bytes
        with f:
            while True:
                if cancel is not None and cancel():
                    f.flush()
                    raise Cancelled(f"download of {url} cancelled after {done} bytes; the partial file {part} is "
                                    f"kept: run again to resume", url=url, path=path)
                if deadline is not None and time.monotonic() > deadline:
                    f.flush()
                    raise DownloadError(f"download of {url} took longer than its overall time limit ({done} bytes "
                                        f"received); the partial file {part} is kept: run again to resume (a very "
                                        f"slow server or network?). {_by_hand(url, path)}", url=url, path=path)
                try:  # read1: what has arrived (one socket read), so the checks above run at least every `timeout`
                    block = resp.read1(CHUNK)
                except (OSError, http.client.HTTPException) as e:  # timeouts, resets, IncompleteRead
                    f.flush()
                    why = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else type(e).__name__
                    raise _interrupted(url, path, part, done, total, why) from None
                if not block:
                    break
                if cap is not None and done + len(block) > cap:  # stop at once: never write past the declared size
                    f.close()
                    _discard(part, meta_path)
                    what = f"the announced {total}" if total is not None else f"the limit of {max_bytes}"
                    raise DownloadError(f"{url}: the server sent more than {what} bytes; stopped and discarded. "
                                        f"{_by_hand(url, path)}", url=url, path=path)
                try:
                    f.write(block)
                except OSError as e:
                    f.close()
                    raise _write_error(url, path, part, meta_path, e) from None
                hasher_box[0].update(block)
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise _interrupted(url, path, part, done, total, "connection closed early")
    if total is not None and done > total:
        _discard(part, meta_path)
        raise DownloadError(f"{url}: received {done} bytes, more than the announced {total}; discarded",
                            url=url, path=path, retryable=True)
    return done


def _interrupted(url, path, part, done, total, why) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(f"download of {url} interrupted after {done}{of} bytes ({why}). The partial file "
                         f"{part} is kept: run again to resume. {_by_hand(url, path)}",
                         url=url, path=path, retryable=True)


MIN_RATE = 50_000  # bytes/s: the default overall time limit lets a declared size arrive at this average rate
MIN_DEADLINE = 600.0  # seconds: ... but never less than this
MAX_UNDECLARED = 64 << 30  # bytes: the most a download of undeclared size may write


def default_deadline(size: int | None) -> float:
    """Default overall time limit (seconds) of a download of ``size`` bytes (None: unknown)."""
    return MIN_DEADLINE if size is None else max(MIN_DEADLINE, size / MIN_RATE)


def download_file(url: str, path, *, size: int | None = None, sha256: str | None = None,
                  progress: Progress | None = None, timeout: float = 30.0, retries: int = 2,
                  retry_wait: float = 1.0, expect_binary: bool = True, user_agent: str | None = None,
                  deadline: float | None = None, cancel: Callable[[], bool] | None = None,
                  max_bytes: int = MAX_UNDECLARED, info: dict | None = None) -> str:
    """Download ``url`` to ``path`` (resuming ``path.part``), verify ``size`` / ``sha256`` when given, rename
    into place, and return the file's sha256 (hex). ``retries``: extra attempts after a retryable failure
    (interruption, timeout, 5xx), each resuming where the last stopped. ``timeout``: seconds for the
    connection and for each read. ``deadline``: seconds for the whole download, retries included (default
    ``default_deadline(size)``). ``cancel()``: called between blocks; True (or an exception it raises, such as
    ComfyUI's interrupt) stops the download, keeping the partial file. ``max_bytes``: the most bytes written
    when neither ``size`` nor the server declares the size (a declared size is never exceeded). ``info``: if
    given, receives ``complete`` (True when the size was declared, by ``size`` or the server, and met)."""

    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"{url!r}: only http(s) URLs can be downloaded", url=url, path=os.fspath(path))
    path = os.path.abspath(os.fspath(path))
    part, meta_path = path + ".part", path + ".part.json"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = file_lock(path + ".lock", what=path)
        lock.__enter__()
    except OSError as e:
        raise DownloadError(f"could not save {url} to {path}: {e.strerror or e} (a read-only or full folder?); "
                            f"choose a writable folder", url=url, path=path) from None
    try:
        return _download_locked(url, path, part, meta_path, size=size, sha256=sha256, progress=progress,
                                timeout=timeout, retries=retries, retry_wait=retry_wait, expect_binary=expect_binary,
                                ua=user_agent or f"lddgan/{__version__} (python-urllib)",
                                deadline=time.monotonic() + (default_deadline(size) if deadline is None else deadline),
                                cancel=cancel, max_bytes=max_bytes, info=info)
    finally:
        lock.__exit__(None, None, None)


def _download_locked(url, path, part, meta_path, *, size, sha256, progress, timeout, retries, retry_wait,
                     expect_binary, ua, deadline, cancel, max_bytes, info) -> str:
    known = [False]
    hasher_box = [hashlib.sha256()]
    if os.path.exists(part):  # resume: the hash must cover the bytes already on disk
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                hasher_box[0].update(block)
    attempt = 0
    while True:
        try:
            total = _attempt(url, path, part, meta_path, size=size, progress=progress, timeout=timeout,
                             user_agent=ua, expect_binary=expect_binary, hasher_box=hasher_box,
                             deadline=deadline, cancel=cancel, max_bytes=max_bytes, known=known)
            break
        except DownloadError as e:
            if not e.retryable or attempt >= retries or time.monotonic() > deadline:
                raise
            attempt += 1
            time.sleep(retry_wait * attempt)
    got_size = os.path.getsize(part) if os.path.exists(part) else 0
    if got_size != total or (size is not None and got_size != size):
        _discard(part, meta_path)
        raise DownloadError(f"{url}: got {got_size} bytes, expected {size if size is not None else total}; the "
                            f"partial file was removed. {_by_hand(url, path)}", url=url, path=path)
    digest = hasher_box[0].hexdigest()
    if sha256 is not None and digest != sha256.lower():
        _discard(part, meta_path)
        raise DownloadError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got {digest} ({got_size} bytes). "
                            f"The download was removed; nothing was installed. If the file was replaced "
                            f"upstream, check its origin before trusting it.", url=url, path=path)
    try:
        os.replace(part, path)
    except OSError as e:
        raise _write_error(url, path, part, meta_path, e) from None
    _discard(meta_path)
    if info is not None:
        info["complete"] = bool(known[0]) or size is not None
    return digest
