"""The models shipped inside the package, and how a model argument (a path, or a manifest id of an installed
model) is resolved to a file. Used by the command line, the benchmark and the ComfyUI nodes alike."""
from __future__ import annotations

import os

from . import zoo

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
# the default model: trained by the project on procedural shapes (32 px; `python -m lddgan_core.recipes shapes`)
DEFAULT_MODEL = os.path.join(MODELS_DIR, "lddgan_shapes32.safetensors")
# the official_tiny fixture (random weights in the official formats) converted to our format: 16 px noise, kept
# for fast pipeline tests and as the parity demo
FIXTURE_MODEL = os.path.join(MODELS_DIR, "lddgan_tiny_fixture.safetensors")
# the emoji model: trained by the project on Noto Color Emoji pictures (64 px; `python -m lddgan_core.recipes emoji`)
EMOJI_MODEL = os.path.join(MODELS_DIR, "lddgan_emoji64.safetensors")
# short names of the shipped models, for --model and the Python API (`lddgan sample --model emoji`)
SHIPPED_MODELS = {"shapes": DEFAULT_MODEL, "emoji": EMOJI_MODEL, "fixture": FIXTURE_MODEL}


def default_model_path() -> str:
    """The model that ships with the pack and that every command uses when none is given."""
    return DEFAULT_MODEL


def resolve_model_path(name: str | None) -> str:
    """A shipped model's short name (SHIPPED_MODELS: shapes, emoji, fixture) resolves to its file; a file path is
    kept as given; a manifest id (not a file) resolves to its installed model in the default folder; nothing: the
    default model."""
    if not name:
        return DEFAULT_MODEL
    if name in SHIPPED_MODELS and not os.path.exists(name):
        return SHIPPED_MODELS[name]
    if os.path.exists(name) or os.sep in name or name.endswith(".safetensors"):
        return name
    try:
        m = zoo.load_manifest()
    except zoo.ZooError:
        return name  # no usable manifest: let the loader report the missing file
    if name not in m.entries and not any(r.get("id") == name for r in m.unavailable):
        return name
    return zoo.ensure(name, zoo.default_dest(), manifest=m, allow_download=False)
