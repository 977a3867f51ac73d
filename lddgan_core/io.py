"""Our one-file model format: a single ``.safetensors`` holding ``generator.*`` and ``autoencoder.*``
weights (fp32, fp16 or bf16) with the complete ModelConfig as JSON in the metadata:

    metadata = {"format": "lddgan", "format_version": "1", "config": <ModelConfig.to_json()>}

Files are written to a temporary name in the target folder and renamed into place.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch

from .config import FORMAT_NAME, FORMAT_VERSION, ModelConfig
from .errors import CheckpointError, ConfigError

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
            raise ConfigError(f"dtype must be fp32, fp16 or bf16, got {dtype}")
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise ConfigError(f"dtype must be one of fp32, fp16, bf16, got {dtype!r}")
    return _DTYPES[str(dtype).lower()]


def _umask() -> int:
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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
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


def save_model(model, path, dtype=None, overwrite: bool = True) -> str:
    from safetensors.torch import save_file

    dtype = parse_dtype(dtype)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{os.fspath(path)!r} exists; pass overwrite=True to replace it")
    tensors = {}
    for prefix, module in (("generator.", model.generator), ("autoencoder.", model.autoencoder)):
        for k, v in module.state_dict().items():
            v = v.detach().cpu()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            tensors[prefix + k] = v.contiguous()
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "config": model.config.to_json()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_model_file(path) -> tuple[dict, dict]:
    """(metadata, tensors) of an LDDGAN file, validated. Raises CheckpointError for foreign files."""
    from .safe_load import read_safetensors

    p = os.fspath(path)
    if os.path.isfile(p):  # name the actual kind of file instead of "bad safetensors header"
        with open(p, "rb") as f:
            head = f.read(9)
        if head.startswith(b"PK\x03\x04"):
            raise CheckpointError(
                f"model file {p!r} is a torch.save checkpoint, not an LDDGAN .safetensors model. Official "
                f"checkpoints (netG_*.pth + autoencoder .ckpt) are imported with `lddgan convert` or "
                f"lddgan_core.load_official().")
        if len(head) == 9 and head[8:9] != b"{":
            raise CheckpointError(f"model file {p!r} is not a safetensors file (starts with {head[:8]!r}); "
                                  f"expected an LDDGAN .safetensors model written by LDDGAN.save()")
    tensors, meta = read_safetensors(path, what="model")
    meta = dict(meta or {})
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(
            f"model file {p!r} is a safetensors file but not an LDDGAN model (its metadata has no "
            f"format='{FORMAT_NAME}' and config). Official checkpoints (netG_*.pth + autoencoder .ckpt) are "
            f"imported with `lddgan convert` or lddgan_core.load_official().")
    try:
        ver = int(meta.get("format_version", "0"))
    except ValueError:
        ver = -1
    if ver < 1 or ver > FORMAT_VERSION:
        raise CheckpointError(f"model file {p!r}: format_version {meta.get('format_version')!r} is not supported "
                              f"by this library (supports 1..{FORMAT_VERSION})")
    try:
        meta["config_dict"] = json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model file {p!r}: config metadata is not valid JSON ({e})") from None
    return meta, tensors


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write a text file (UTF-8) through atomic_write."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def key_mismatch(target: dict, given: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, shape mismatches) of a state dict `given` against a module's `target`:
    what a strict-load error lists."""
    missing = sorted(set(target) - set(given))
    unexpected = sorted(set(given) - set(target))
    shapes = [f"{k}: file {tuple(given[k].shape)} vs config {tuple(target[k].shape)}"
              for k in sorted(set(given) & set(target)) if given[k].shape != target[k].shape]
    return missing, unexpected, shapes


def validate_model_file(path) -> ModelConfig:
    """Check an LDDGAN file completely without building the model: format, config (types and limits), the
    weights' names and shapes against the config, finite weights. Returns the config."""
    from .limits import check_finite_weights, check_weights_match

    p = os.fspath(path)
    meta, tensors = read_model_file(p)
    try:
        cfg = ModelConfig.from_dict(meta["config_dict"])
    except ConfigError as e:
        raise CheckpointError(f"model file {p!r}: {e}") from None
    check_weights_match(cfg, {k: tuple(v.shape) for k, v in tensors.items()}, f"model file {p!r}")
    check_finite_weights(tensors, f"model file {p!r}")
    return cfg


def load_model(path, device="cpu", dtype=torch.float32):
    """Load our format. dtype=None keeps the stored precision; otherwise weights are cast."""
    from .model import LDDGAN

    p = os.fspath(path)
    meta, tensors = read_model_file(p)
    try:
        cfg = ModelConfig.from_dict(meta["config_dict"])
    except ConfigError as e:
        raise CheckpointError(f"model file {p!r}: {e}") from None
    from .limits import check_finite_weights, check_weights_match

    # before building anything: the config's sizes must be the weights' sizes, and the weights finite
    check_weights_match(cfg, {k: tuple(v.shape) for k, v in tensors.items()}, f"model file {p!r}")
    check_finite_weights(tensors, f"model file {p!r}")
    try:
        model = LDDGAN(cfg)
    except ConfigError as e:  # e.g. a degenerate schedule
        raise CheckpointError(f"model file {p!r}: {e}") from None
    dtype = parse_dtype(dtype)
    for prefix, module in (("generator.", model.generator), ("autoencoder.", model.autoencoder)):
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected, shapes = key_mismatch(module.state_dict(), sd)
        if missing or unexpected or shapes:
            raise CheckpointError(f"model file {p!r}: {prefix[:-1]} weights do not match its config: "
                                  f"missing {missing[:20]}, unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}")
        module.load_state_dict(sd, strict=True)
    stray = sorted(k for k in tensors if not k.startswith(("generator.", "autoencoder.")))
    if stray:
        raise CheckpointError(f"model file {p!r}: unexpected tensors {stray[:20]}")
    stored = next(iter(tensors.values())).dtype if tensors else torch.float32
    model = model.to(device=device, dtype=dtype or stored)
    return model.eval()
