"""Load tensors from checkpoint files without ever executing pickled code.

Supported formats (detected by content, never by extension):

* torch.save zip archives (``.pth``, ``.pt``, Lightning ``.ckpt``);
* safetensors files.

Zip archives are first read with ``torch.load(..., weights_only=True)``. Lightning checkpoints
from the LDM model zoo usually pickle extra objects (``ModelCheckpoint`` callback state,
``omegaconf`` configs, ``argparse.Namespace``, numpy scalars, ``pathlib`` paths) that
``weights_only`` refuses; for those a restricted unpickler is used. It rebuilds tensors with
torch's own rebuild functions and turns every other global into an inert :class:`Opaque`
placeholder: nothing is imported, no ``__reduce__`` callable or ``__setstate__`` of a real class
runs. Every failure is reported as :class:`~lddgan_core.errors.CheckpointError` naming the file.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import torch

from ..errors import CheckpointError

__all__ = ["read_state_dict", "read_safetensors", "Opaque"]  # noqa: RUF022

_ZIP_MAGIC = b"PK\x03\x04"
_CONVERT_HINT = ("re-save it with a current PyTorch (torch.save(torch.load(f), f2)) "
                 "or convert it to safetensors")


class Opaque:
    """Inert stand-in for a pickled object whose class is not on the allow-list.

    ``qualname`` is the dotted name found in the pickle; constructor arguments, ``BUILD`` state
    and list/dict items are only recorded. Subclasses are made per dotted name at load time.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[])
        return obj

    def __init__(self, *args, **kwargs):  # arguments were recorded by __new__
        pass

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __setitem__(self, key, value):
        self.__dict__["items"].append((key, value))

    def append(self, value):
        self.__dict__["items"].append(value)

    def extend(self, values):
        self.__dict__["items"].extend(values)

    def __repr__(self):
        return f"<Opaque {self.qualname}>"


# Globals the restricted unpickler may return as the real object; everything else -> Opaque.
_ALLOWED = {
    ("torch._utils", n): getattr(torch._utils, n)
    for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
              "_rebuild_parameter_with_state")
}
_ALLOWED.update({("collections", "OrderedDict"): collections.OrderedDict,
                 ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
                 ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
                 ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
                 ("_codecs", "encode"): lambda text, enc="utf-8": text.encode(enc)})


# What a ``torch.<X>Storage`` global resolves to: only its dtype is needed.
_StorageType = collections.namedtuple("_StorageType", "dtype")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip archive; storages come from ``data/<key>``."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, swap: bool):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._swap = archive, prefix, swap
        self._storages: dict = {}
        self._opaque: dict = {}
        self.allocated, self.max_bytes = 0, None

    def find_class(self, module, name):
        module = "builtins" if module == "__builtin__" else module  # protocol-2 spelling
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch":  # vars() never triggers torch's lazy submodule imports
            obj = vars(torch).get(name)
            if isinstance(obj, torch.dtype):
                return obj
            if name.endswith("Storage") and obj is not None and name != "TypedStorage":
                dtype = (torch.uint8 if name == "UntypedStorage"
                         else torch.storage._get_dtype_from_pickle_storage_type(name))
                return _StorageType(dtype)
        dotted = f"{module}.{name}"
        if dotted not in self._opaque:
            self._opaque[dotted] = type(name, (Opaque,), {"qualname": dotted})
        return self._opaque[dotted]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        dtype, key, numel = pid[1].dtype, str(pid[2]), int(pid[4])
        if key not in self._storages:
            nbytes = numel * torch._utils._element_size(dtype)
            self.allocated += nbytes
            if self.max_bytes is not None and self.allocated > self.max_bytes:
                raise _TooBig(self.allocated, self.max_bytes)
            with self._archive.open(f"{self._prefix}data/{key}") as member:
                blob = member.read(nbytes)  # never more than the pickle says the storage holds
            if len(blob) < nbytes:
                raise pickle.UnpicklingError(f"storage blob {key} is {len(blob)} bytes, "
                                             f"expected {nbytes}")
            raw = (torch.UntypedStorage.from_buffer(blob[:nbytes], dtype=torch.uint8)
                   if nbytes else torch.UntypedStorage(0))
            if self._swap:
                raw.byteswap(dtype)
            self._storages[key] = torch.storage.TypedStorage(
                wrap_storage=raw, dtype=dtype, _internal=True)
        return self._storages[key]


class _TooBig(Exception):
    def __init__(self, need: int, limit: int):
        super().__init__(need, limit)
        self.need, self.limit = need, limit


# What reading a checkpoint may allocate without a bound from a config: twice the file's size (the data of a
# torch.save archive is stored uncompressed) plus this much.
SIZE_SLACK = 64 << 20


def _limit(size: int, max_bytes: int | None) -> int:
    bound = 2 * size + SIZE_SLACK
    return bound if max_bytes is None else min(bound, int(max_bytes))


def _too_big(label: str, need: int, limit: int) -> CheckpointError:
    return CheckpointError(f"{label} would need {need / 2**20:.1f} MiB of tensor data, more than the "
                           f"{limit / 2**20:.1f} MiB its size and its config allow (a compressed 'bomb' or a corrupt "
                           f"file); it was not loaded")


def _check_zip_sizes(path, label: str, limit: int) -> None:
    """Refuse a zip archive whose members declare more bytes than ``limit`` before anything is inflated."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(i.file_size for i in archive.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{label} is truncated or corrupted (unreadable zip: {e})") from None
    if total > limit:
        raise _too_big(label, total, limit)


class _LegacyScan(_RestrictedUnpickler):
    """Reads the pickles of a legacy file with inert stand-ins for every class; storages are only counted."""

    def __init__(self, f):
        pickle.Unpickler.__init__(self, f)  # noqa: PLC2801 - not the zip reader's constructor
        self._storages, self._opaque = {}, {}
        self.allocated, self.max_bytes = 0, None

    def find_class(self, module, name):
        if module == "torch._utils":  # nothing is rebuilt: only the storages' sizes are wanted
            return lambda *args, **kwargs: None
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and isinstance(pid[1], _StorageType):
            key = str(pid[2])
            if key not in self._storages:
                self._storages[key] = True
                self.allocated += int(pid[4]) * torch._utils._element_size(pid[1].dtype)
        return None


def _legacy_bytes(path) -> int:
    """Bytes the storages of a legacy (pre-zip) torch.save file declare, found without allocating them."""
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            _LegacyScan(f).load()
        scan = _LegacyScan(f)
        scan.load()  # the saved object, whose storages follow it in the file
    return scan.allocated


def _label(path, what: str) -> str:
    return f"{what} file '{os.fspath(path)}'"


def _check_file(path, what: str) -> int:
    """Return the file size, or raise CheckpointError for missing / directory / empty."""
    if not os.path.exists(path):
        raise CheckpointError(f"{_label(path, what)} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{_label(path, what)} is a directory; pass the file inside it")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{_label(path, what)} is empty (0 bytes)")
    return size


def _restricted_load(path, what: str, max_bytes: int | None = None):
    with zipfile.ZipFile(path) as archive:
        pkls = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        prefix = pkls[0][: -len("data.pkl")]
        order = b"little"
        if f"{prefix}byteorder" in archive.namelist():
            order = archive.read(f"{prefix}byteorder").strip()
        if order not in (b"little", b"big"):
            raise CheckpointError(f"{_label(path, what)}: unknown byteorder {order!r}")
        swap = order.decode() != sys.byteorder
        u = _RestrictedUnpickler(archive.read(pkls[0]), archive, prefix, swap)
        u.max_bytes = max_bytes
        try:
            return u.load()
        except _TooBig as e:
            raise _too_big(_label(path, what), e.need, e.limit) from None


def _read_torch_zip(path, what: str, max_bytes: int | None = None):
    label = _label(path, what)
    limit = _limit(os.path.getsize(path), max_bytes)
    _check_zip_sizes(path, label, limit)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{label} is truncated or corrupted (unreadable zip: {e})") from None
    if any(n.endswith("constants.pkl") for n in names):
        raise CheckpointError(f"{label} is a TorchScript archive, not a state dict; "
                              "save model.state_dict() instead")
    if not any(n.endswith("data.pkl") and n.count("/") == 1 for n in names):
        raise CheckpointError(f"{label} is a zip archive but not a torch.save checkpoint")
    try:
        with open(path, "rb") as f:  # a file object: torch.load must not dispatch on extension
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds non-tensor Python objects: retry with the restricted unpickler below
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/OSError/... on bad data
        raise CheckpointError(f"{label} could not be read (truncated or corrupted?): {e}") from None
    try:
        return _restricted_load(path, what, limit)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{label} could not be unpickled safely: "
                              f"{type(e).__name__}: {e}") from None


def read_safetensors(path, *, what: str = "checkpoint"):
    """Read a safetensors file; return ``(tensors, metadata)`` with tensors on CPU."""
    size, label = _check_file(path, what), _label(path, what)
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise CheckpointError(f"{label} is not a valid safetensors file "
                                  f"(header length {n} vs file size {size}; truncated?)")
        try:
            header = json.loads(f.read(n))
            end = max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"],
                      default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{label} has a corrupt safetensors header: {e}") from None
    if 8 + n + end > size:
        raise CheckpointError(f"{label} is truncated: tensor data needs {8 + n + end} bytes, "
                              f"file has {size}")
    try:
        from safetensors import safe_open
        with safe_open(os.fspath(path), framework="pt", device="cpu") as sf:
            return {k: sf.get_tensor(k) for k in sf.keys()}, dict(sf.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{label} could not be read as safetensors: {e}") from None


def read_state_dict(path, *, what: str = "checkpoint", max_bytes: int | None = None) -> dict:
    """Return the top-level object stored in a torch zip or safetensors file, on CPU.

    For torch files this is whatever was saved (usually a dict; Lightning checkpoints keep
    the weights under ``"state_dict"``); objects of non-allow-listed classes come back as
    :class:`Opaque` placeholders. For safetensors it is the ``{name: tensor}`` dict.
    """
    size = _check_file(path, what)
    label = _label(path, what)
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(_ZIP_MAGIC):
        return _read_torch_zip(path, what, max_bytes)
    if max_bytes is not None and size > max_bytes:
        raise _too_big(label, size, int(max_bytes))
    if len(head) == 9 and head[8:9] == b"{":
        return read_safetensors(path, what=what)[0]
    if head[:1] == b"\x80":  # a bare pickle stream: the pre-zip torch.save format (e.g. pytorch-fid's weights)
        import torch

        try:
            need = _legacy_bytes(path)
        except Exception as e:  # noqa: BLE001 - any failure to scan: not a well-formed legacy file
            raise CheckpointError(f"{label} is not a readable legacy torch.save file ({type(e).__name__}: {e}); "
                                  f"{_CONVERT_HINT}") from None
        if need > _limit(size, max_bytes):
            raise _too_big(label, need, _limit(size, max_bytes))
        try:  # torch's weights_only unpickler reads it safely (tensors and plain containers only)
            return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - no restricted fallback for this format
            raise CheckpointError(f"{label} uses the legacy (pre-1.6) torch.save format and holds more than "
                                  f"tensors and plain containers ({type(e).__name__}), which is not loaded; "
                                  f"{_CONVERT_HINT}") from None
    raise CheckpointError(f"{label} is not a checkpoint (neither a torch.save zip archive nor "
                          f"safetensors; starts with {head[:8]!r}); {_CONVERT_HINT}")
