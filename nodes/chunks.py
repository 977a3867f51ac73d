"""Running a batch in chunks on the compute device: sized to free memory (retrying smaller on out-of-memory) and
to time, so that a progress tick and a Cancel check come about every TARGET_SECONDS on any device.

The chunk policy is the nodes' own (the library sees only the chunks): the memory planner gives the upper
bound; within it a ``Pace`` starts from a conservative estimate of the work per sample (``*_flops`` below over
an assumed throughput) and then sizes each next chunk from the measured time of the last one.

Every library call the nodes make is per-sample deterministic (seeds per sample, no batch statistics),
so splitting a batch never changes a result; tests check that.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable

import torch

from . import runtime
from .lib import decode_bytes_per_image

log = logging.getLogger("lddgan")

MEMORY_MARGIN = 0.5  # use at most this fraction of the free memory: the estimates below are rough
TARGET_SECONDS = 0.5  # aim for a progress tick and a Cancel check this often (measured, so about)
PROBE_SECONDS = 0.25  # the first chunk, sized from an estimate before anything is measured, aims at this
MAX_GROWTH = 4  # a chunk is at most this many times the last measured one (a noisy fast measurement)
# FLOP/s assumed before the first measurement: deliberately low (a few shared CPU cores; a small GPU), so that the
# first chunk is short; the measured rate takes over after it
ASSUMED_FLOPS = {"cpu": 1e10}
ASSUMED_FLOPS_ACCELERATOR = 2e11


def clock() -> float:
    """Seconds on a monotonic clock (tests replace it with a fake one)."""
    return time.perf_counter()


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


def _conv_flops(ch: int, ch_mult, num_res_blocks: int, h: int, w: int) -> float:
    """Rough FLOPs of a U-Net-like stack of 3x3 residual blocks: level i at (h >> i) x (w >> i) px with
    ch * ch_mult[i] channels, about 2 * num_res_blocks + 1 blocks of two convolutions each."""
    return float(sum(36 * (ch * m) ** 2 * max(1, h >> i) * max(1, w >> i) * (2 * num_res_blocks + 1)
                     for i, m in enumerate(ch_mult)))


def sample_flops(model, h: int, w: int) -> float:
    """Rough FLOPs of one generator step for one sample of an h x w latent (the unit between two ticks)."""
    g = model.config.generator
    return _conv_flops(g.nf, g.ch_mult, g.num_res_blocks, h, w)


def decode_flops(model, h: int, w: int) -> float:
    """Rough FLOPs to decode (or, about the same, encode) one h x w latent."""
    a = model.config.autoencoder
    f = a.downsample_factor
    return _conv_flops(a.ch, a.ch_mult, a.num_res_blocks, h * f, w * f)


def encode_flops(model, H: int, W: int) -> float:
    f = model.config.autoencoder.downsample_factor
    return decode_flops(model, max(1, H // f), max(1, W // f))


class Pace:
    """Samples per chunk such that one tick's work (``ticks`` per chunk: one per sampling step, or one per
    chunk) takes about TARGET_SECONDS. Starts from ``flops_per_tick`` (per sample) over the throughput assumed
    for ``device`` (aiming at PROBE_SECONDS), then follows the measured time of each chunk (``record``),
    growing by at most MAX_GROWTH per chunk. ``run_chunked`` keeps the memory bound on top of it."""

    def __init__(self, flops_per_tick: float, device, ticks: int = 1):
        dev = getattr(device, "type", str(device))
        rate = ASSUMED_FLOPS.get(dev, ASSUMED_FLOPS_ACCELERATOR)
        self.ticks = max(1, int(ticks))
        self.next = max(1, int(PROBE_SECONDS * rate / max(1.0, float(flops_per_tick))))

    def size(self) -> int:
        return self.next

    def record(self, n: int, seconds: float) -> None:
        """``n`` samples took ``seconds`` for the whole chunk (all its ticks)."""
        per_tick = seconds / self.ticks
        grown = max(1, n) * MAX_GROWTH
        self.next = grown if per_tick <= 0 else max(1, min(grown, int(TARGET_SECONDS * n / per_tick)))


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
                on_done: Callable[[int], None] | None = None, pace: Pace | None = None) -> torch.Tensor:
    """Concatenate fn(start, stop) over the batch in chunks of at most ``first_chunk`` (the memory bound); on
    out-of-memory the bound halves and the failed chunk is run again (down to 1 sample, then the error is
    raised with advice). With a ``pace``, chunks are also sized to time (see ``Pace``). ``on_done(n_done)`` is
    called after each chunk. Results are moved to the output device."""
    out, start, size = [], 0, max(1, int(first_chunk))
    dev = runtime.output_device()
    while start < batch:
        stop = min(batch, start + (size if pace is None else min(size, pace.size())))
        runtime.check_interrupt()
        try:
            t0 = clock()
            out.append(fn(start, stop).to(dev))
            if pace is not None:
                runtime.synchronize()  # time the work, not its launch
                pace.record(stop - start, clock() - t0)
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
