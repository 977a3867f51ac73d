"""Differentiable augmentation of the discriminator's inputs, with an adaptive probability.

With few training images the discriminator memorises them and the generator collapses. The remedy of
DiffAugment (Zhao et al. 2020) and StyleGAN2-ADA (Karras et al. 2020): every input D sees, real or generated,
in the D step and in the G step, goes through the same family of random, differentiable transformations, so
D cannot tell real from fake by the transformation and G receives gradients through it. Each transformation is
applied to a sample with probability p; with ``ada_target`` > 0 p follows an overfitting signal, the mean sign
of D's logits on real pairs (r = E[sign D(real)]: 0 when D cannot separate, 1 when it is sure of every real
pair): p rises while r > target and falls while r < target.

LDDGAN's D judges pairs (x_t, x_{t+1}) of diffusion states. Both states of a pair get the SAME transformation
(one draw per sample), so the pair stays a consistent picture of one latent at two noise levels. We augment in
latent space (the autoencoder is frozen; nothing has to be decoded): the ops below act on [B, C, h, w] latents,
whose pixels map to f x f image patches, so a one-latent-pixel shift is an f-pixel image shift.

Ops (names for ``TrainConfig.d_augment``, comma separated, in this order):
  translation  shift by up to ``ratio`` of the side (at least one latent pixel), zeros shifted in
  cutout       zero a square of half the side at a random place
  flip         mirror left-right
  color        per-sample brightness (add U(-0.5, 0.5) std), saturation (scale the deviation from the
               channel mean by U(0, 2)) and contrast (scale the deviation from the mean by U(0.5, 1.5)),
               in units of the latent's own spread, as DiffAugment's colour op does on RGB
Every random number is drawn on the CPU from a generator the trainer seeds with (seed, step), for the whole
global batch, so runs stay reproducible and independent of the device and the micro-batch split.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

OPS = ("translation", "cutout", "flip", "color")
TRANSLATION_RATIO = 0.125  # DiffAugment's 1/8 of the side
CUTOUT_RATIO = 0.5  # DiffAugment's half of the side
P_MAX = 0.8  # above this, non-invertible ops start to leak into the generator (StyleGAN2-ADA, Fig. 3)


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); 'off', '' or None -> (). Unknown names: ConfigError."""
    if policy is None:
        return ()
    if not isinstance(policy, str):
        raise ConfigError(f"d_augment must be a comma-separated string of {list(OPS)} or 'off', got {policy!r}")
    names = [s.strip() for s in policy.split(",") if s.strip()]
    if names in ([], ["off"]):
        return ()
    bad = [n for n in names if n not in OPS]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"d_augment: {policy!r} must list distinct names from {list(OPS)} (or be 'off')")
    return tuple(n for n in OPS if n in names)


def draw_params(ops: tuple[str, ...], p: float, batch: int, size: tuple[int, int], g: torch.Generator) -> dict:
    """Random parameters of one augmentation of `batch` pairs at probability p (CPU tensors). The same number of
    values is drawn whatever p is, so the random stream does not depend on p."""
    H, W = size
    out = {}
    for op in ops:
        apply = torch.rand(batch, generator=g) < p
        if op == "translation":
            ry, rx = (max(1, int(round(s * TRANSLATION_RATIO))) for s in (H, W))
            dy = torch.randint(-ry, ry + 1, (batch,), generator=g)
            dx = torch.randint(-rx, rx + 1, (batch,), generator=g)
            out[op] = torch.stack([dy, dx], 1) * apply[:, None]
        elif op == "cutout":
            ch, cw = max(1, int(H * CUTOUT_RATIO + 0.5)), max(1, int(W * CUTOUT_RATIO + 0.5))
            cy = torch.randint(0, H + (1 - ch % 2), (batch,), generator=g)
            cx = torch.randint(0, W + (1 - cw % 2), (batch,), generator=g)
            out[op] = (torch.stack([cy, cx], 1), (ch, cw), apply)
        elif op == "flip":
            out[op] = (torch.rand(batch, generator=g) < 0.5) & apply
        elif op == "color":
            u = torch.rand(batch, 3, generator=g)
            out[op] = (torch.stack([u[:, 0] - 0.5, u[:, 1] * 2.0, u[:, 2] + 0.5], 1), apply)
    return out


def _translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    r = int(shift.abs().max()) if shift.numel() else 0
    if r == 0:
        return x
    xp = F.pad(x, (r, r, r, r))
    iy = torch.arange(H, device=x.device)[None, :] + r - shift[:, 0:1]  # [B, H] source rows
    ix = torch.arange(W, device=x.device)[None, :] + r - shift[:, 1:2]  # [B, W] source columns
    bi = torch.arange(B, device=x.device)[:, None, None]
    return xp[bi, :, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]


def _cutout_mask(params, shape, device, dtype) -> torch.Tensor:
    centre, (ch, cw), apply = params
    B, _, H, W = shape
    ys = torch.arange(H)[None, :] - (centre[:, 0:1] - ch // 2)
    xs = torch.arange(W)[None, :] - (centre[:, 1:2] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # [B, H, W]
    inside &= apply[:, None, None]
    return (~inside).to(dtype)[:, None].to(device)


def _color(x: torch.Tensor, bsc: torch.Tensor, spread: float) -> torch.Tensor:
    b, s, c = (v[:, None, None, None] for v in bsc.unbind(1))
    x = x + b * spread
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * s + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * c + m


def apply_pair(x_t: torch.Tensor, x_tp1: torch.Tensor, params: dict, spread: float = 1.0):
    """The same transformation on both states of every pair. params: draw_params rows for these samples (CPU);
    spread: the data's std in diffusion space (the colour op's unit). Differentiable in x_t and x_tp1."""
    if not params:
        return x_t, x_tp1
    return apply(x_t, params, spread), apply(x_tp1, params, spread)


def apply(x: torch.Tensor, params: dict, spread: float = 1.0) -> torch.Tensor:
    """The transformation of draw_params rows on one batch [B, C, H, W] (apply_pair's, for a single input such
    as the image discriminator's pictures). Differentiable in x."""
    dev = x.device
    if params:
        if "translation" in params:
            x = _translate(x, params["translation"].to(dev))
        if "cutout" in params:
            x = x * _cutout_mask(params["cutout"], x.shape, dev, x.dtype)
        if "flip" in params:
            x = torch.where(params["flip"].to(dev)[:, None, None, None], x.flip(3), x)
        if "color" in params and bool(params["color"][1].any()):
            bsc, on = params["color"]
            x = torch.where(on.to(dev)[:, None, None, None], _color(x, bsc.to(dev, x.dtype), spread), x)
    return x


def take_params(params: dict, index) -> dict:
    """Rows `index` (a slice, or an index tensor such as a permutation of the batch) of a draw_params result."""
    out = {}
    for k, v in params.items():
        if k == "cutout":
            out[k] = (v[0][index], v[1], v[2][index])
        elif k == "color":
            out[k] = (v[0][index], v[1][index])
        else:
            out[k] = v[index]
    return out


class AdaptiveP:
    """StyleGAN2-ADA's controller: every `interval` iterations, p += sign(r - target) * batch * interval /
    (kimg * 1000), clamped to [0, P_MAX], where r is the mean of sign(D(real)) since the last update.
    target 0: p stays at its initial value."""

    def __init__(self, p: float, target: float, kimg: float, interval: int = 4):
        if not (0.0 <= p <= 1.0) or not math.isfinite(p):
            raise ConfigError(f"augmentation probability must be in [0, 1], got {p!r}")
        self.p, self.target, self.kimg, self.interval = float(p), float(target), float(kimg), int(interval)
        self._sum, self._n, self.last_r = 0.0, 0, float("nan")

    def observe(self, real_logits: torch.Tensor) -> None:
        if self.target > 0:
            s = torch.sign(real_logits.detach().float())
            self._sum += float(s.sum())
            self._n += s.numel()

    def update(self, step: int, batch: int) -> None:
        """Call after iteration `step` (0-based) with the global batch size."""
        if self.target <= 0 or (step + 1) % self.interval or self._n == 0:
            return
        self.last_r = self._sum / self._n
        delta = batch * self.interval / (self.kimg * 1000.0)
        self.p = min(P_MAX, max(0.0, self.p + math.copysign(delta, self.last_r - self.target)))
        self._sum, self._n = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.p, "sum": self._sum, "n": self._n, "last_r": self.last_r}

    def load_state_dict(self, st: dict) -> None:
        self.p, self._sum, self._n = float(st["p"]), float(st["sum"]), int(st["n"])
        self.last_r = float(st.get("last_r", float("nan")))
