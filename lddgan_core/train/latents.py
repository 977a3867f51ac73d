"""Training latents: images encoded once with the frozen autoencoder and cached as safetensors.

KL: the posterior mean and std are kept, so that each iteration can draw posterior.sample() = mean + std * eps
as the official trainer does (or use the mean). VQ: the pre-quantization latent (std None). Stored in the
autoencoder's own, unscaled space; the trainer divides by scale_factor.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import torch

from ..atomic import atomic_write
from ..diffusion.sampler import torch_seed
from ..errors import CheckpointError, InputError
from ..formats.safe_load import read_safetensors
from .data import (augment as run_augment, bad_files_error, check_files, find_images, folder_fingerprint, from_tensor,
                   load_file)

CACHE_FORMAT = "lddgan-latents"


@dataclass(frozen=True)
class LatentSet:
    mean: torch.Tensor  # [N, C, h, w] float32, CPU: KL posterior mean or VQ pre-quantization latent
    std: torch.Tensor | None  # [N, C, h, w] KL posterior std (exp(logvar / 2), logvar clamped); None for VQ
    fingerprint: str  # identifies images + augmentation + autoencoder weights

    def __len__(self) -> int:
        return self.mean.shape[0]

    def draw(self, index: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """Latents of rows `index` [b]: mean + std * eps (eps [b, C, h, w]) or the mean when eps is None."""
        x = self.mean[index]
        if eps is not None and self.std is not None:
            x = x + self.std[index] * eps
        return x


def autoencoder_digest(autoencoder: torch.nn.Module) -> str:
    """sha256 over the autoencoder's state dict (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for k, v in autoencoder.state_dict().items():
        t = v.detach().cpu()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}\n".encode())
        # numpy's tobytes is C-ordered whatever the strides (weights may be channels_last); bf16 via float32
        h.update((t.float() if t.is_floating_point() else t).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_images(autoencoder, images: torch.Tensor, batch_size: int = 32, device=None,
                  progress=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[N, 3, H, W] in [-1, 1] -> (mean [N, C, h, w], std or None) on the CPU, float32."""
    device = torch.device(device) if device is not None else next(autoencoder.parameters()).device
    was = autoencoder.training
    autoencoder.eval()
    means, stds = [], []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(device)
            if autoencoder.cfg.kind == "kl":
                mean, logvar = autoencoder.encode_posterior(x)
                # contiguous: an autoencoder on the channels_last fast path returns NHWC strides, and the
                # trainer's arithmetic must not depend on whether latents came fresh or from the cache
                means.append(mean.float().cpu().contiguous())
                stds.append(torch.exp(0.5 * logvar.float()).cpu().contiguous())
            else:
                means.append(autoencoder.encode(x).float().cpu().contiguous())
            if progress is not None:
                progress(min(i + batch_size, images.shape[0]), images.shape[0])
    finally:
        autoencoder.train(was)
    return torch.cat(means), (torch.cat(stds) if stds else None)


def save_latents(path: str, lat: LatentSet) -> str:
    from safetensors.torch import save_file

    tensors = {"mean": lat.mean.contiguous()}
    if lat.std is not None:
        tensors["std"] = lat.std.contiguous()
    meta = {"format": CACHE_FORMAT, "fingerprint": lat.fingerprint}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_latents(path: str, fingerprint: str | None = None) -> LatentSet | None:
    """The cached LatentSet, or None when the file is absent or was made from other data."""

    if not os.path.isfile(path):
        return None
    try:
        tensors, meta = read_safetensors(path, what="latent cache")
    except CheckpointError:
        return None  # a damaged cache is rebuilt
    meta = meta or {}
    if meta.get("format") != CACHE_FORMAT or "mean" not in tensors:
        return None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        return None
    return LatentSet(tensors["mean"].float(), tensors["std"].float() if "std" in tensors else None,
                     meta.get("fingerprint", ""))


def build_latents(autoencoder, image_size: int, *, images: torch.Tensor | None = None, folder: str | None = None,
                  augment=None, seed: int = 0, cache_dir: str | None = None, device=None, skip_bad: bool = False,
                  chunk: int = 64, log=None) -> LatentSet:
    """Latents of the training images: a folder (recursive), an in-memory batch [B, 3, H, W] in [-1, 1], or both.

    Images are resized / center-cropped to image_size, optionally augmented (``data.Augment``: `copies`
    versions of each image), encoded `chunk` images at a time with the frozen autoencoder (so a large folder is
    never held in memory as pixels) and cached in cache_dir as latents-<fingerprint>.safetensors. The fingerprint
    covers the file list (paths, sizes, mtimes) or tensor bytes, the size, the augmentation and its seed, and
    the autoencoder's weights: a cache is reused only for the same inputs."""

    if images is None and folder is None:
        raise InputError("training data: give images (a [B, 3, H, W] tensor in [-1, 1]) and/or an image folder")
    parts, tensor = [f"size={image_size}", f"aug={augment.key() if augment else None}", f"seed={seed}"], None
    paths: list[str] = []
    if images is not None:
        tensor, fp = from_tensor(images, image_size)
        parts.append(f"tensor={fp}")
    if folder is not None:
        paths = find_images(folder)
        parts.append(f"folder={folder_fingerprint(folder, paths)}")
    digest = hashlib.sha256(f"{'|'.join(parts)}|{autoencoder_digest(autoencoder)}".encode()).hexdigest()
    path = os.path.join(cache_dir, f"latents-{digest[:16]}.safetensors") if cache_dir else None
    if path is not None:
        cached = load_latents(path, digest)
        if cached is not None:
            if log:
                log(f"latents: {len(cached)} from cache {path}")
            return cached
    bad = check_files(paths) if paths else []
    if bad and (not skip_bad or len(bad) == len(paths)):
        raise bad_files_error(folder, bad, len(paths), len(bad) < len(paths))
    skip = {p for p, _ in bad}
    good = [p for p in paths if p not in skip]
    means, stds, k = [], [], 0

    def encode(x):
        nonlocal k
        if augment:
            x = run_augment(x, augment, seed * 1_000_003 + k)
        k += 1
        m, sd = encode_images(autoencoder, x, batch_size=chunk, device=device)
        means.append(m)
        if sd is not None:
            stds.append(sd)

    if tensor is not None:
        for i in range(0, tensor.shape[0], chunk):
            encode(tensor[i:i + chunk])
    for i in range(0, len(good), chunk):
        batch = []
        for p in good[i:i + chunk]:
            try:
                batch.append(load_file(p, image_size))
            except InputError as e:  # passed the header check but the pixel data is broken
                if not skip_bad:
                    raise bad_files_error(folder, [(p, str(e))], len(paths), True) from None
                bad.append((p, str(e)))
        if batch:
            encode(torch.stack(batch))
    if not means:
        raise bad_files_error(folder, bad, len(paths), False)
    if bad and log:
        log(f"skipped {len(bad)} unreadable image(s): " + ", ".join(p for p, _ in bad[:10]))
    lat = LatentSet(torch.cat(means), torch.cat(stds) if stds else None, digest)
    if path is not None:
        save_latents(path, lat)
        if log:
            log(f"latents: encoded {len(lat)} image(s) -> {path}")
    elif log:
        log(f"latents: encoded {len(lat)} image(s)")
    return lat


def estimate_scale_factor(lat: LatentSet, quantile: float = 0.999, max_values: int = 1 << 22,
                          seed: int = 0) -> float:
    """A scale factor s such that latent / s lies within the generator's tanh range [-1, 1] for all but a
    fraction 1 - quantile of the values: s = quantile(|mean + std * eps|), rounded up to 3 significant digits.
    (The official values are 105 for the CIFAR-10 KL-f2 "free" latent, 6 and 60 for VQ-f4 and KL-f8.)"""
    if len(lat) == 0:
        raise InputError("estimate_scale_factor: no latents")
    g = torch.Generator().manual_seed(torch_seed(seed))
    x = lat.mean
    if lat.std is not None:
        x = x + lat.std * torch.randn(x.shape, generator=g)
    v = x.abs().flatten()
    if v.numel() > max_values:  # torch.quantile's input limit; a random subset estimates the quantile well
        v = v[torch.randperm(v.numel(), generator=g)[:max_values]]
    q = float(torch.quantile(v.double(), quantile))
    if not math.isfinite(q) or q <= 0:
        raise InputError(f"estimate_scale_factor: latents are degenerate (quantile {q}); give a scale factor")
    digits = 2 - math.floor(math.log10(q))
    return math.ceil(q * 10 ** digits) / 10 ** digits
