"""Live previews for the sampler: the current x0 prediction of the first sample of a chunk, decoded with the
model's own autoencoder and sent through the progress bar as core samplers send theirs
(``("JPEG", PIL image, max size)``), at a bounded cost.

A preview is decoded only when PREVIEW_INTERVAL seconds have passed since the last one (or since sampling
started), so fast runs send none and slow ones (big batches, large models, CPU) about one a second; the time a
preview took is measured and the next one waits at least that time / PREVIEW_SHARE, so previews never take more
than about PREVIEW_SHARE of the run. A preview that fails (e.g. out of memory) switches previews off for the
run rather than failing it.
"""
from __future__ import annotations

import logging

import torch

from . import chunks
from .convert import model_to_image

log = logging.getLogger("lddgan")

PREVIEW_INTERVAL = 1.0  # seconds between two previews, at least
PREVIEW_SHARE = 0.05  # previews take at most about this fraction of the run
PREVIEW_MAX_SIZE = 512  # the max_size handed to ComfyUI with each preview
PREVIEW_MIN_SIDE = 256  # small images are enlarged (nearest neighbour, whole factor) to about this


def preview_image(model, x0: torch.Tensor):
    """PIL image of the first x0 prediction in ``x0`` ([n, C, h, w], diffusion space, as the library's sampler
    callback gives it), decoded like the final latent (x0 times the scale factor), enlarged to about
    PREVIEW_MIN_SIDE px by a whole factor."""
    from PIL import Image

    img = model_to_image(model.decode(x0[:1] * model.scale_factor))[0]  # [H, W, 3] 0..1
    arr = (img * 255.0).round().to(torch.uint8).cpu().numpy()
    pil = Image.fromarray(arr)
    k = max(1, PREVIEW_MIN_SIDE // max(arr.shape[0], arr.shape[1]))
    return pil.resize((arr.shape[1] * k, arr.shape[0] * k), Image.NEAREST) if k > 1 else pil


class Previews:
    """Decides when to send a preview and makes it; ``__call__(x0)`` returns a ComfyUI preview tuple or None."""

    def __init__(self, model):
        self.model = model
        self.next_at = chunks.clock() + PREVIEW_INTERVAL
        self.sent = 0
        self.spent = 0.0  # seconds spent decoding previews
        self.off = False

    def __call__(self, x0: torch.Tensor):
        if self.off:
            return None
        now = chunks.clock()
        if now < self.next_at:
            return None
        try:
            img = preview_image(self.model, x0)
        except Exception as e:  # noqa: BLE001 - a preview must never fail the run
            log.warning("LDDGAN: sampler previews switched off for this run (%s: %s)", type(e).__name__, e)
            self.off = True
            return None
        done = chunks.clock()
        self.spent += done - now
        self.sent += 1
        self.next_at = done + max(PREVIEW_INTERVAL, (done - now) / PREVIEW_SHARE)
        return ("JPEG", img, PREVIEW_MAX_SIZE)
