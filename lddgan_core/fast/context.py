"""Run-time context of the fast path: memory format and autocast dtype per network, grad mode, cuDNN."""
from __future__ import annotations

import contextlib

import torch

from .options import AUTOCAST_DTYPES, FastOptions


def channels_last_for(part: str, opts: FastOptions, device: torch.device) -> bool:
    """Whether `part` ("generator" / "autoencoder") runs in NHWC memory format on `device`."""
    if opts.channels_last is not None:
        return bool(opts.channels_last)
    # NHWC: faster for the decoder's large maps on CPU (oneDNN; bench: decode rows) and the layout CUDA
    # tensor-core convolutions want; the generator's small maps gained nothing on CPU
    return part == "autoencoder" or torch.device(device).type == "cuda"


def autocast_dtype(opts: FastOptions, part: str, device: torch.device, vq: bool = False) -> torch.dtype | None:
    """Half dtype used for `part` ("generator" / "decoder") of a KL (or `vq`) model, or None for float32."""
    if opts.autocast is None or (part == "decoder" and opts.decoder_fp32 is True) or (
            part == "generator" and (opts.generator_fp32 is True or (opts.generator_fp32 == "auto" and vq))):
        return None
    dt = AUTOCAST_DTYPES[opts.autocast]
    if torch.device(device).type == "cpu" and dt == torch.float16:
        return None  # CPU float16 autocast is not used: oneDNN has no fast float16 convolutions on most CPUs
    return dt


@contextlib.contextmanager
def runtime(opts: FastOptions, device: torch.device, part: str | None = None, half: bool = True, vq: bool = False):
    """Grad mode + autocast + cuDNN settings for one call of `part` ("generator" / "decoder" / None)."""
    device = torch.device(device)
    dt = autocast_dtype(opts, part, device, vq) if (part and half) else None
    cudnn_prev = torch.backends.cudnn.benchmark
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode() if opts.inference_mode else torch.no_grad())
        if dt is not None:
            # autocast's weight-cast cache must be off while CUDA graphs are captured
            stack.enter_context(torch.autocast(device.type, dtype=dt, cache_enabled=not opts.cuda_graphs))
        if device.type == "cuda" and opts.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        try:
            yield dt
        finally:
            torch.backends.cudnn.benchmark = cudnn_prev


def clone_inference_tensors(x):
    """Clone inference-mode tensors (recursively in lists / tuples) into normal ones, so callers can use them
    in autograd and in-place ops; other values are returned as they are."""
    if torch.is_tensor(x):
        return x.clone() if x.is_inference() else x
    if isinstance(x, (list, tuple)):
        return type(x)(clone_inference_tensors(v) for v in x)
    return x
