"""Our one-file model format: a single ``.safetensors`` holding ``generator.*`` and ``autoencoder.*``
weights (fp32, fp16 or bf16) with the complete ModelConfig as JSON in the metadata:

    metadata = {"format": "lddgan", "format_version": "1", "config": <ModelConfig.to_json()>}

Files are written to a temporary name in the target folder and renamed into place.
"""
from __future__ import annotations

import json
import os

import torch

from ..atomic import atomic_write
from ..config import FORMAT_NAME, FORMAT_VERSION, ModelConfig
from ..errors import CheckpointError, ConfigError
from ..limits import check_finite_weights
from .safe_load import read_safetensors
from .weights_check import check_weights_match

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


def read_model_config(path) -> dict:
    """The config dict (with its provenance) of an LDDGAN model file, from the file's header alone: no tensor is
    read. Raises CheckpointError when the file cannot be read as one."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
        cfg = json.loads(meta.get("config", "{}"))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types
        raise CheckpointError(f"{path}: not a readable LDDGAN model ({err})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: not a readable LDDGAN model (its config metadata is not a JSON object)")
    return cfg


def key_mismatch(target: dict, given: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, shape mismatches) of a state dict `given` against a module's `target`:
    what a strict-load error lists."""
    missing = sorted(set(target) - set(given))
    unexpected = sorted(set(given) - set(target))
    shapes = [f"{k}: file {tuple(given[k].shape)} vs config {tuple(target[k].shape)}"
              for k in sorted(set(given) & set(target)) if given[k].shape != target[k].shape]
    return missing, unexpected, shapes


def read_checked_model_file(path):
    """Read an LDDGAN file and check it completely without building the model: format, config (types and limits),
    the weights' names and shapes against the config, finite weights. Returns (ModelConfig, metadata, tensors)."""
    p = os.fspath(path)
    meta, tensors = read_model_file(p)
    try:
        cfg = ModelConfig.from_dict(meta["config_dict"])
    except ConfigError as e:
        raise CheckpointError(f"model file {p!r}: {e}") from None
    check_weights_match(cfg, {k: tuple(v.shape) for k, v in tensors.items()}, f"model file {p!r}")
    check_finite_weights(tensors, f"model file {p!r}")
    return cfg, meta, tensors


def validate_model_file(path):
    """read_checked_model_file, returning the ModelConfig only."""
    return read_checked_model_file(path)[0]
