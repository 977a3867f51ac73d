"""Procedural "shapes" images with known modes: the data the shipped default model is trained and evaluated on.

Each image is a coloured shape on a varied background. Its mode is (shape, colour): 4 shapes x 4 colour
families = 16 modes, drawn uniformly. Inside a mode the size, position, rotation, exact hue / saturation /
brightness and the background (a tinted gradient with a little noise) vary, so the data is multimodal with a
known, countable mode structure (lddgan_core.eval measures how many modes a model covers).

Image i of a dataset depends only on (seed, i): make_shapes(n, seed)[:k] == make_shapes(k, seed), and a
dataset can be grown without changing its first images. Shapes are rendered analytically at 4x resolution
and box-filtered (anti-aliased), in float64 on the CPU, so the result is the same on every machine.

    from lddgan_core.data.shapes import make_shapes
    images, labels = make_shapes(1000, seed=0)   # uint8 [1000, 3, 32, 32], dict of int64 [1000] tensors
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "yellow", "green", "blue")
# hue (degrees) of each colour family; each image jitters it by up to +-HUE_JITTER
HUES = (0.0, 55.0, 125.0, 225.0)
HUE_JITTER = 12.0
NUM_MODES = len(SHAPES) * len(COLOURS)
SUPERSAMPLE = 4
TRAIN_SEED = 0  # the default model's training data
HELDOUT_SEED = 1  # held-out data for evaluation (never trained on)


def mode_name(mode: int) -> str:
    """'red circle' for mode 0: mode = shape * len(COLOURS) + colour."""
    return f"{COLOURS[mode % len(COLOURS)]} {SHAPES[mode // len(COLOURS)]}"


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h in degrees, s and v in [0, 1], each [N] -> [N, 3] in [0, 1]."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - (h % 2 - 1).abs())
    m = v - c
    z = torch.zeros_like(c)
    sector = h.floor().long().clamp(0, 5)
    table = torch.stack([torch.stack(t, -1) for t in
                         ((c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c), (c, z, x))], 1)  # [N, 6, 3]
    return table[torch.arange(h.shape[0]), sector] + m[:, None]


def _params(n: int, seed: int, start: int) -> dict[str, torch.Tensor]:
    """Per-image random parameters for images start..start+n-1, each from its own generator."""
    keys = ("mode", "u", "noise_seed")
    out: dict[str, list] = {k: [] for k in keys}
    for i in range(start, start + n):
        g = torch.Generator().manual_seed((seed * 1_000_003 + i) % (2 ** 63))
        out["mode"].append(int(torch.randint(NUM_MODES, (1,), generator=g)))
        out["u"].append(torch.rand(16, generator=g, dtype=torch.float64))
        out["noise_seed"].append(int(torch.randint(2 ** 62, (1,), generator=g)))
    p = {"mode": torch.tensor(out["mode"]), "noise_seed": out["noise_seed"]}
    u = torch.stack(out["u"])  # [n, 16] uniforms
    p["shape"] = p["mode"] // len(COLOURS)
    p["colour"] = p["mode"] % len(COLOURS)
    p["radius"] = 0.22 + 0.16 * u[:, 0]  # fraction of the image side: 7..12 px at 32 px
    r = p["radius"]
    p["cx"] = r + 0.04 + (1 - 2 * r - 0.08) * u[:, 1]  # the shape stays inside the image
    p["cy"] = r + 0.04 + (1 - 2 * r - 0.08) * u[:, 2]
    p["angle"] = (u[:, 3] - 0.5) * (math.pi / 6)  # +-15 degrees
    hue = torch.tensor(HUES, dtype=torch.float64)[p["colour"]] + (2 * u[:, 4] - 1) * HUE_JITTER
    p["fg"] = _hsv_to_rgb(hue, 0.75 + 0.25 * u[:, 5], 0.7 + 0.3 * u[:, 6])
    # background: low saturation, any hue, a linear gradient between two brightnesses
    bg_h = 360.0 * u[:, 7]
    bg_s = 0.25 * u[:, 8]
    v0 = 0.1 + 0.7 * u[:, 9]
    v1 = (v0 + (u[:, 10] - 0.5) * 0.4).clamp(0.05, 0.9)
    p["bg0"] = _hsv_to_rgb(bg_h, bg_s, v0)
    p["bg1"] = _hsv_to_rgb(bg_h, bg_s, v1)
    p["grad_angle"] = 2 * math.pi * u[:, 11]
    p["noise"] = 0.04 * u[:, 12]
    return p


def _shape_mask(shape: int, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside-test of one shape kind at rotated coordinates u, v [n, S, S] with radii r [n, 1, 1]."""
    if shape == 0:  # circle
        return (u * u + v * v) <= r * r
    if shape == 1:  # square
        return torch.maximum(u.abs(), v.abs()) <= 0.8 * r
    if shape == 2:  # equilateral triangle pointing up (image y grows downwards), inscribed in the circle of radius r
        return (v <= 0.5 * r) & (math.sqrt(3) * u - v <= r) & (-math.sqrt(3) * u - v <= r)
    arm = 0.32 * r  # cross
    return ((u.abs() <= arm) & (v.abs() <= r)) | ((v.abs() <= arm) & (u.abs() <= r))


def _masks(p: dict, size: int) -> torch.Tensor:
    """Coverage [n, size, size] in [0, 1] of each image's shape (4x4 supersampled)."""
    s = size * SUPERSAMPLE
    c = (torch.arange(s, dtype=torch.float64) + 0.5) / s
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    out = torch.zeros(p["shape"].shape[0], size, size, dtype=torch.float64)
    for k in range(len(SHAPES)):  # each image evaluates only its own shape
        idx = (p["shape"] == k).nonzero().flatten()
        if idx.numel() == 0:
            continue
        dx = xx[None] - p["cx"][idx, None, None]
        dy = yy[None] - p["cy"][idx, None, None]
        ca, sa = p["angle"][idx].cos()[:, None, None], p["angle"][idx].sin()[:, None, None]
        u = ca * dx + sa * dy  # rotated coordinates
        v = -sa * dx + ca * dy
        m = _shape_mask(k, u, v, p["radius"][idx, None, None])
        out[idx] = m.double().reshape(-1, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(dim=(2, 4))
    return out


def _render(p: dict, size: int) -> torch.Tensor:
    n = p["mode"].shape[0]
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    ga = p["grad_angle"]
    t = ((xx[None] - 0.5) * ga.cos()[:, None, None] + (yy[None] - 0.5) * ga.sin()[:, None, None]) / math.sqrt(2) + 0.5
    bg = p["bg0"][:, :, None, None] * (1 - t[:, None]) + p["bg1"][:, :, None, None] * t[:, None]  # [n, 3, s, s]
    noise = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(ns), dtype=torch.float64)
                         for ns in p["noise_seed"]]) if n else torch.zeros(0, 3, size, size, dtype=torch.float64)
    bg = bg + p["noise"][:, None, None, None] * noise
    a = _masks(p, size)[:, None]
    img = bg * (1 - a) + p["fg"][:, :, None, None] * a
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def make_shapes(n: int, seed: int = TRAIN_SEED, size: int = 32, start: int = 0,
                chunk: int = 512) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n images (indices start..start+n-1 of the dataset `seed`): uint8 [n, 3, size, size] and labels
    {"mode", "shape", "colour": int64 [n]; "radius", "cx", "cy": float64 [n] (fractions of the side)}."""
    for name, v, lo in (("n", n, 0), ("seed", seed, 0), ("size", size, 8), ("start", start, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise InputError(f"make_shapes: {name} must be an integer >= {lo}, got {v!r}")
    imgs, labels = [], {k: [] for k in ("mode", "shape", "colour", "radius", "cx", "cy")}
    for i in range(start, start + n, chunk):
        k = min(chunk, start + n - i)
        p = _params(k, seed, i)
        imgs.append(_render(p, size))
        for key in labels:
            labels[key].append(p[key])
    if not imgs:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), {k: torch.zeros(0, dtype=torch.int64)
                                                                  for k in labels}
    return torch.cat(imgs), {k: torch.cat(v) for k, v in labels.items()}


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 in [-1, 1] (what the trainers and the autoencoder take)."""
    return images.float() / 127.5 - 1.0


def save_folder(folder: str, n: int, seed: int = TRAIN_SEED, size: int = 32) -> str:
    """Write the dataset as PNG files <folder>/<mode name>/<index>.png (e.g. to train from the CLI)."""
    import os

    from PIL import Image

    images, labels = make_shapes(n, seed, size)
    for i in range(n):
        d = os.path.join(folder, mode_name(int(labels["mode"][i])).replace(" ", "_"))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(os.path.join(d, f"{i:06d}.png"))
    return folder
