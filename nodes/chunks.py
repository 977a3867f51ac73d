"""Running a batch in memory-sized chunks on the compute device, retrying smaller on out-of-memory.

Every library call the nodes make is per-sample deterministic (seeds per sample, no batch statistics),
so splitting a batch never changes a result; tests check that.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable

import torch

from . import runtime
from .lib import decode_bytes_per_image

log = logging.getLogger("lddgan")

MEMORY_MARGIN = 0.5  # use at most this fraction of the free memory: the estimates below are rough


def _dtype_size(model) -> int:
    return torch.finfo(model.dtype).bits // 8


def decode_bytes(model, h: int, w: int) -> int:
    """Peak activation bytes to decode one latent of h x w: the library's estimate (calibrated against
    measured peaks, ``lddgan_core.fast.decode_bytes_per_image``), counted in float32. It leaves out attention
    matrices: the nodes run the fast path, whose fused attention never builds them (an out-of-memory retry
    in ``run_chunked`` covers the rest)."""
    return decode_bytes_per_image(model.config.autoencoder, h, w, max(4, _dtype_size(model)))


def encode_bytes(model, H: int, W: int) -> int:
    f = model.config.autoencoder.downsample_factor
    return decode_bytes(model, max(1, H // f), max(1, W // f))


def sample_bytes(model, h: int, w: int) -> int:
    """Rough peak bytes for one sample through the generator: the skip stack (about 2 maps per block
    and level) plus working maps, and attention matrices."""
    g = model.config.generator
    maps = sum(g.nf * m * (h >> i) * (w >> i) * (g.num_res_blocks + 2) * 2 for i, m in enumerate(g.ch_mult))
    attn = sum(((h >> i) * (w >> i)) ** 2 for i, r in enumerate(g.resolutions) if r in g.attn_resolutions)
    attn += ((h >> (len(g.ch_mult) - 1)) * (w >> (len(g.ch_mult) - 1))) ** 2
    return (maps + 2 * attn) * max(4, _dtype_size(model))


def budget(free: int | None) -> int | None:
    """Bytes a node may use: MEMORY_MARGIN of ``free`` (None when the free memory is unknown: the library's
    own default budget then applies)."""
    return None if free is None else int(free * MEMORY_MARGIN)


def chunk_size(batch: int, per_sample: int, free: int | None) -> int:
    """Samples per chunk: as many as fit in MEMORY_MARGIN of ``free`` bytes (the whole batch when the
    free memory is unknown), at least 1."""
    if free is None:
        return max(1, batch)
    return max(1, min(batch, int(free * MEMORY_MARGIN) // max(1, per_sample)))


@contextlib.contextmanager
def on_device(model):
    """Move ``model`` to the compute device for the duration, and back to the offload device after,
    whatever happens."""
    device = runtime.compute_device()
    runtime.make_room(_model_bytes(model), device)
    model.to(device)
    try:
        yield device
    finally:
        model.to(runtime.offload_device())
        runtime.empty_cache()


def _model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_chunked(batch: int, first_chunk: int, fn: Callable[[int, int], torch.Tensor],
                on_done: Callable[[int], None] | None = None) -> torch.Tensor:
    """Concatenate fn(start, stop) over the batch in chunks of ``first_chunk``; on out-of-memory the chunk
    halves and the failed chunk is run again (down to 1 sample, then the error is raised with advice).
    ``on_done(n_done)`` is called after each chunk. Results are moved to the output device."""
    out, start, size = [], 0, max(1, int(first_chunk))
    dev = runtime.output_device()
    while start < batch:
        stop = min(batch, start + size)
        runtime.check_interrupt()
        try:
            out.append(fn(start, stop).to(dev))
            oom = False
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
            if not runtime.is_oom(e):
                raise
            if size == 1:
                raise RuntimeError(f"LDDGAN: out of memory even for one sample ({e}). Use a smaller image/latent "
                                   f"or a lower precision (LDDGAN Model Loader: fp16/bf16).") from e
            oom = True
        if oom:  # outside the except block, so the failed chunk's tensors can be freed first
            size = max(1, math.ceil(size / 2))
            log.warning("LDDGAN: out of memory; retrying with %d samples per chunk", size)
            runtime.empty_cache()
            continue
        start = stop
        if on_done is not None:
            on_done(start)
    return torch.cat(out, dim=0)
