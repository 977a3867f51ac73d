"""Which files in the model folders LDDGAN Model Loader offers: only loadable LDDGAN models.

Fine-tuning leaves side files beside its model (``<name>.discriminator.safetensors``, ``<name>.cache/latents-*``)
and an interrupted save can leave a ``.tmp-*`` file; none of them is a model. A naming rule drops temporary files
and cache folders without opening them; every other file must have a safetensors header whose metadata says
format 'lddgan' with a config. Only the header is read (8 bytes of length, then at most MAX_HEADER bytes of
JSON), and the answer is cached per file by modification time and size, so listing stays cheap when ComfyUI
asks for the node definitions again.
"""
from __future__ import annotations

import json
import os
import struct

from .lib import L

MAX_HEADER = 16 * 1024 * 1024  # a safetensors JSON header larger than this is not one of ours
_cache: dict[str, tuple[int, int, bool]] = {}


def is_side_file(name: str) -> bool:
    """Files that are never models, by name alone ('/'-separated, relative to a model folder)."""
    parts = name.replace(os.sep, "/").split("/")
    return any(p.startswith(".tmp-") or p.endswith(".cache") for p in parts)


def _read_is_model(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER:
                return False
            meta = json.loads(f.read(n)).get("__metadata__") or {}
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == L.config.FORMAT_NAME and "config" in meta


def is_lddgan_model(path: str) -> bool:
    """True when ``path`` is a safetensors file whose metadata marks an LDDGAN model (header only, cached)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    hit = _cache.get(path)
    if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
        return hit[2]
    ok = _read_is_model(path)
    _cache[path] = (st.st_mtime_ns, st.st_size, ok)
    return ok


def loadable(names, resolve) -> list[str]:
    """The names (as the model folders list them) of loadable LDDGAN models; ``resolve(name)`` -> full path."""
    out = []
    for name in names:
        if is_side_file(name):
            continue
        try:
            path = resolve(name)
        except (ValueError, OSError):  # L.InputError is a ValueError
            continue
        if is_lddgan_model(path):
            out.append(name)
    return out
