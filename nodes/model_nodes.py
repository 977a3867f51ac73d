"""LDDGAN Model Loader and LDDGAN Save Model: our one-file .safetensors format in models/lddgan."""
from __future__ import annotations

import os
import re

import torch

from . import listing, runtime
from .lib import L, check_paths_fit, default_model_path, parse_dtype, save_model

MODEL_TYPE = "LDDGAN_MODEL"
PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
SAVE_PRECISIONS = ["keep", "fp32", "fp16", "bf16"]
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


def loadable_models() -> list[str]:
    """The loader's list: LDDGAN models in the model folders, without fine-tune side files or temporary files; the
    shipped default model first (a new Model Loader preselects the first choice), the rest in name order."""
    names = listing.loadable(runtime.list_models(), runtime.resolve_model)
    default = os.path.basename(default_model_path())
    return [default] + [n for n in names if n != default] if default in names else names


def load_precision(precision: str, device: torch.device):
    """dtype to load with: None keeps the stored precision. 'auto' keeps it on accelerators and uses fp32
    on the CPU, where half precision is slow or unsupported."""
    if precision not in PRECISIONS:
        raise L.InputError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else None
    return parse_dtype(precision)


class LDDGANModelLoader:
    CATEGORY = "LDDGAN"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The LDDGAN model (generator + autoencoder + schedule), for LDDGAN Sampler, Encode, "
                       "Decode, VAE and Save Model.",)
    DESCRIPTION = ("Loads an LDDGAN model in the pack's one-file .safetensors format from models/lddgan (or any "
                   "'lddgan' folder named in extra_model_paths.yaml), or one of the models shipped with the pack. "
                   "Official checkpoints are converted once with `lddgan convert`.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (loadable_models() + runtime.download_choices(), {
                    "tooltip": "An LDDGAN .safetensors model from models/lddgan or shipped with the pack "
                               "(lddgan_shapes32: the default, trained on procedural coloured shapes, 32x32 px; "
                               "lddgan_emoji64: colour emoji, 64x64 px, trained on Noto Color Emoji pictures; "
                               "lddgan_tiny_fixture: 16x16 px, random weights, for testing graphs). Fine-tune "
                               "side files (.discriminator, .cache, .tmp-) are not listed. A model written by "
                               "Save Model or Fine-Tune appears when that node has run (else press R). Entries "
                               "marked [download] are published weights (weights_manifest.json) not yet on "
                               "disk: they are fetched, verified and converted on first use when "
                               "allow_download is on."}),
            },
            "optional": {
                "precision": (PRECISIONS, {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: fp32 on the CPU, the file's own precision on a GPU. "
                               "fp16 / bf16 halve memory; fp32 is the reference."}),
                "allow_download": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Allow fetching a [download] model from the internet (once; it is then kept in "
                               "models/lddgan). Off: a [download] choice is an error that names the URL and the "
                               "folder to put the file in by hand."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        # Replaces ComfyUI's combo check for model_name: a saved workflow that picked '[download] X' stays
        # valid after X has been installed (the choice then disappears from the list).
        if model_name in loadable_models() or runtime.download_entry(model_name) is not None:
            return True
        return (f"model_name: {model_name!r} is neither an LDDGAN model in {runtime.model_dirs()} nor a download "
                f"listed in the weights manifest")

    @classmethod
    def IS_CHANGED(cls, model_name, precision="auto", allow_download=False):
        # Reload when the file is replaced on disk under the same name.
        try:
            st = os.stat(runtime.resolve_model(model_name))
        except (OSError, ValueError):
            return ""
        return f"{st.st_mtime_ns}:{st.st_size}:{precision}"

    def load(self, model_name, precision="auto", allow_download=False):
        entry = runtime.download_entry(model_name)
        if entry is not None:
            path = runtime.install_download(entry, allow_download=bool(allow_download))
        else:
            path = runtime.resolve_model(model_name)
        dtype = load_precision(precision, runtime.compute_device())
        # ComfyUI runs nodes under torch.inference_mode(); weights created there become inference tensors,
        # which can never be trained (a fine-tune node downstream) and have no version counter. Load as
        # ordinary tensors.
        with torch.inference_mode(False):
            return (L.load(path, device=runtime.offload_device(), dtype=dtype),)


def checked_filename(filename: str) -> str:
    name = str(filename).strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not name or not _NAME_OK.match(name) or ".." in name:
        raise L.InputError(f"filename: {filename!r} is not a plain file name (letters, digits, '.', '_', '-', "
                           f"spaces; no folders); e.g. 'my_model'")
    return name + ".safetensors"


class LDDGANSaveModel:
    CATEGORY = "LDDGAN"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file.",)
    DESCRIPTION = ("Writes the model in the pack's one-file .safetensors format into models/lddgan (written to a "
                   "temporary name, then renamed: an interrupted save never leaves a broken file). An existing "
                   "file is only replaced when overwrite is on.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LDDGAN model to save."}),
                "filename": ("STRING", {"default": "lddgan_model",
                                        "tooltip": "File name in models/lddgan; '.safetensors' is added."}),
                "overwrite": ("BOOLEAN", {"default": False,
                                          "tooltip": "Replace an existing file of that name. Off: an existing "
                                                     "file is an error and is left untouched."}),
            },
            "optional": {
                "precision": (SAVE_PRECISIONS, {"default": "keep",
                                                "tooltip": "Stored precision: keep the model's, or fp32 / fp16 / "
                                                           "bf16 (half precision halves the file)."}),
            },
        }

    # Per target path: the token IS_CHANGED gave while the file was missing. ComfyUI re-runs a node only when
    # IS_CHANGED differs from the cached run's value: a file deleted after it was saved gives a new token, so the
    # node runs (and writes it) again instead of reporting a cached success; a file that is there keeps the token
    # of the run that wrote it, so an unchanged graph stays cached.
    _missing_tokens: dict = {}

    @classmethod
    def IS_CHANGED(cls, filename="", **_inputs):
        try:
            path = os.path.join(runtime.save_dir(), checked_filename(filename))
        except (ValueError, OSError):
            return float("nan")  # unknown (e.g. a linked filename): always run; the run reports problems
        if os.path.isfile(path):
            return cls._missing_tokens.get(path, "present")
        import time
        token = f"missing@{time.monotonic_ns()}"
        cls._missing_tokens[path] = token
        return token

    def save(self, model, filename, overwrite, precision="keep"):
        if precision not in SAVE_PRECISIONS:
            raise L.InputError(f"precision: expected one of {SAVE_PRECISIONS}, got {precision!r}")
        path = os.path.join(runtime.save_dir(), checked_filename(filename))
        check_paths_fit([path], "filename")
        if os.path.exists(path) and not overwrite:
            raise L.InputError(f"filename: {path} already exists; turn overwrite on to replace it, or choose "
                               f"another name")
        save_model(model, path, dtype=None if precision == "keep" else precision, overwrite=bool(overwrite))
        return {"ui": {"text": [path]}, "result": (path,)}
