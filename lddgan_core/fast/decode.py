"""Decode planning (how many latents at once, whole images or tiles, from a memory budget) and tiled decoding.

One planner: ``plan_decode``. The library's ``LDDGAN.decode`` makes a plan only when none is given; the
ComfyUI nodes make one from the free memory and hand it in.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import torch

from .context import autocast_dtype
from .options import MIN_TILE, FastOptions


CPU_DECODE_BUDGET = 2 << 30  # bytes of activations a CPU decode may hold at once
CUDA_DECODE_FRACTION = 0.5  # of the free GPU memory


def decode_bytes_per_image(ae_cfg, h: int, w: int, elem: int = 4) -> int:
    """Estimated peak bytes of decoding one [C, h, w] latent: 4 live copies of the decoder's largest
    feature map (the level where channels x pixels peaks, counting the upsampled map that still has the
    lower level's width), or, for VQ, 3.5 [h*w, n_embed] float32 distance matrices if that is more. Calibrated
    against the peak memory ``python -m lddgan_core.bench`` measures (an estimate at or above it)."""
    n = len(ae_cfg.ch_mult)
    biggest = 0
    for lvl in range(n):  # level 0 is the full resolution
        res_h, res_w = h << (n - 1 - lvl), w << (n - 1 - lvl)
        c = max(ae_cfg.ch * ae_cfg.ch_mult[lvl], ae_cfg.ch * ae_cfg.ch_mult[min(lvl + 1, n - 1)])
        biggest = max(biggest, c * res_h * res_w)
    est = 4 * biggest * elem
    if ae_cfg.kind == "vq":
        est = max(est, 7 * h * w * ae_cfg.n_embed * 4 // 2)
    return est


def decode_budget(device: torch.device) -> float:
    """Bytes a decode may use: CPU_DECODE_BUDGET, or on CUDA a fraction of the free memory, counting what
    PyTorch's allocator holds in its cache but does not use as free (it is reused before asking the driver)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return CUDA_DECODE_FRACTION * (free + max(0, cached))
    return CPU_DECODE_BUDGET


def decode_elem_size(opts: FastOptions, device: torch.device, fp32_fallback: bool = False) -> int:
    """Bytes per activation of a decode: 2 under a half-precision decoder (unless it fell back to float32)."""
    return 2 if autocast_dtype(opts, "decoder", torch.device(device)) and not fp32_fallback else 4


class DecodePlan(NamedTuple):
    """How one batch of latents is decoded: ``tile`` latent pixels per square tile (None: whole images),
    ``chunk`` latents at once."""
    tile: int | None
    chunk: int


def decode_tile_size(ae_cfg, shape, opts: FastOptions, elem: int, budget: float,
                     tile_size: int | None = None) -> int | None:
    """Latent pixels per square tile for latents of `shape` [B, C, h, w], or None to decode whole images.
    "auto" tiles only when one image's estimated decode memory is over the budget, with the largest tile (a
    multiple of 8) that fits it."""
    h, w = shape[2], shape[3]
    t = opts.decode_tile if tile_size is None else int(tile_size)
    if t is None:
        return None
    if t == "auto":
        if decode_bytes_per_image(ae_cfg, h, w, elem) <= budget:
            return None
        t = MIN_TILE
        while t + MIN_TILE < max(h, w) and decode_bytes_per_image(ae_cfg, t + MIN_TILE, t + MIN_TILE, elem) <= budget:
            t += MIN_TILE
        if decode_bytes_per_image(ae_cfg, t, t, elem) > budget:
            warnings.warn(f"decode: even {t}x{t}-latent tiles need about "
                          f"{decode_bytes_per_image(ae_cfg, t, t, elem) / 2**20:.1f} MiB, over the "
                          f"{budget / 2**20:.1f} MiB "
                          f"budget; decoding with the smallest tiles", RuntimeWarning, stacklevel=4)
    return None if t >= h and t >= w else t


def decode_chunk_size(ae_cfg, shape, opts: FastOptions, elem: int, budget: float, chunk_size: int | None = None,
                      tile: int | None = None) -> int:
    """How many latents of `shape` [B, C, h, w] to decode at once (images decoded in tiles of `tile` latent
    pixels: sized per tile)."""
    B, h, w = shape[0], shape[2], shape[3]
    if chunk_size is not None:
        return max(1, min(B, int(chunk_size)))
    if opts.decode_chunk is None:
        return B
    if opts.decode_chunk != "auto":
        return max(1, min(B, opts.decode_chunk))
    if tile is not None:  # tiled images: the memory of one tile's decode per image
        h, w = min(h, tile), min(w, tile)
    return max(1, min(B, int(budget // decode_bytes_per_image(ae_cfg, h, w, elem))))


def plan_decode(ae_cfg, shape, opts: FastOptions, device: torch.device, *, budget: float | None = None,
                fp32_fallback: bool = False, chunk_size: int | None = None,
                tile_size: int | None = None) -> DecodePlan:
    """The one decode planner: tile size, then chunk size, for latents of `shape` [B, C, h, w] within
    `budget` bytes (default ``decode_budget(device)``). ``chunk_size`` / ``tile_size`` override the options."""
    elem = decode_elem_size(opts, device, fp32_fallback)
    budget = decode_budget(device) if budget is None else budget
    tile = decode_tile_size(ae_cfg, shape, opts, elem, budget, tile_size)
    return DecodePlan(tile, decode_chunk_size(ae_cfg, shape, opts, elem, budget, chunk_size, tile))


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering 0..n with at least `overlap` shared between neighbours
    (the last tile ends at n)."""
    if tile >= n:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """Blend weights along one axis of a tile: linear over `ramp` pixels at each side that has a neighbour."""
    i = torch.arange(length, dtype=torch.float32) + 0.5
    w = torch.ones(length)
    if rise:
        w = torch.minimum(w, i / ramp)
    if fall:
        w = torch.minimum(w, (length - i) / ramp)
    return w


def decode_tiled(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, tile: int, factor: int,
                 overlap: int | None = None) -> torch.Tensor:
    """Decode latents [n, C, h, w] in overlapping square tiles of `tile` latent pixels (`overlap` shared
    between neighbours, default tile // 4) with `decode` ([n, C, th, tw] -> [n, 3, th*f, tw*f]); tiles are
    blended with linear ramps across the overlaps. Memory: one tile's decode plus the output image.
    Approximate: the decoder's attention and receptive field see only one tile (bench / tests report the
    PSNR against decoding whole images); one tile covering the latent gives the whole-image decode exactly."""
    n, _, h, w = z.shape
    overlap = max(1, tile // 4) if overlap is None else int(overlap)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = wsum = None
    for y0 in ys:
        th = min(tile, h)
        wy = _ramp(th * factor, overlap * factor, y0 > 0, y0 + th < h)
        for x0 in xs:
            tw = min(tile, w)
            img = decode(z[:, :, y0:y0 + th, x0:x0 + tw]).float()
            if out is None:
                out = img.new_zeros(n, img.shape[1], h * factor, w * factor)
                wsum = img.new_zeros(1, 1, h * factor, w * factor)
            wgt = (wy[:, None] * _ramp(tw * factor, overlap * factor, x0 > 0, x0 + tw < w)[None]).to(img.device)
            ys_, xs_ = slice(y0 * factor, (y0 + th) * factor), slice(x0 * factor, (x0 + tw) * factor)
            out[:, :, ys_, xs_] += img * wgt
            wsum[:, :, ys_, xs_] += wgt
    return out / wsum


def warn_decoder_fallback(name: str) -> None:
    warnings.warn(f"{name}: the half-precision decoder produced non-finite values; decoding in float32 from "
                  f"now on (FastOptions(decoder_fp32=True) makes this the default)", RuntimeWarning, stacklevel=3)
