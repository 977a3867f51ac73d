"""Image helpers for the CLI (PIL <-> tensors). Tensors are [B, 3, H, W] in [-1, 1]."""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..atomic import atomic_write


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, 3, H, W] on the CPU: the 8-bit values a PNG of each image stores."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (``quantize``, as an image array)."""
    return quantize(images).permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 [H', W', 3] grid of a batch, `nrow` images per row (default ~sqrt(B))."""
    arr = to_uint8(images)
    B, H, W, _ = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(B)))
    rows = math.ceil(B / nrow)
    grid = np.zeros((rows * (H + pad) + pad, nrow * (W + pad) + pad, 3), dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, nrow)
        grid[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = arr[i]
    return grid


def save_png(array: np.ndarray, path: str) -> str:
    from PIL import Image

    img = Image.fromarray(array)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def load_image(path: str, size: int | None = None) -> torch.Tensor:
    """RGB image file -> [1, 3, H, W] in [-1, 1]; resized (shorter side) and center-cropped to `size`."""
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} not found")
    img = Image.open(path).convert("RGB")
    if size is not None:
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return x.permute(2, 0, 1)[None]
