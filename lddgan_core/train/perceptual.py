"""An LPIPS-style perceptual distance (Zhang et al. 2018) from VGG-16 weights the user supplies locally.

Nothing is downloaded. The file (safetensors, or a torch state dict read with weights_only=True) must hold
VGG-16's 13 convolutions in torchvision's layout (``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.weight`` /
``.bias``), with or without a prefix such as ``net.`` or ``vgg.``; optionally LPIPS's linear heads
``lin{0..4}.model.1.weight`` [1, C, 1, 1] (without them every channel weighs the same).

distance(x, y) = sum over the relu1_2 .. relu5_3 features of mean_hw sum_c w_c (f_x - f_y)^2, where f is unit-
normalised over channels; inputs in [-1, 1] are first shifted / scaled as LPIPS does.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from ..formats.safe_load import read_state_dict

_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16.features indices
_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
_TAPS = {1: 0, 3: 1, 6: 2, 9: 3, 12: 4}  # conv position (0-based) after whose ReLU a feature is taken
_POOL_AFTER = {1, 3, 6, 9}  # max-pool after these convs
# LPIPS ScalingLayer constants for inputs in [-1, 1]
_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


class PerceptualLoss(nn.Module):
    def __init__(self, lin: bool = False):
        super().__init__()
        cin, convs = 3, []
        for c in _WIDTHS:
            convs.append(nn.Conv2d(cin, c, 3, padding=1))
            cin = c
        self.convs = nn.ModuleList(convs)
        self.lins = nn.ParameterList([nn.Parameter(torch.ones(1, _WIDTHS[i], 1, 1)) for i in _TAPS]) if lin else None
        self.register_buffer("shift", _SHIFT.clone(), persistent=False)
        self.register_buffer("scale", _SCALE.clone(), persistent=False)
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if i in _TAPS:
                out.append(h)
            if i in _POOL_AFTER:
                h = F.max_pool2d(h, 2)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] x 2 in [-1, 1] -> per-sample distance [B]."""
        total = 0.0
        for k, (fx, fy) in enumerate(zip(self.features(x), self.features(y))):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = (fx - fy).pow(2)
            d = (d * self.lins[k]).sum(1) if self.lins is not None else d.mean(1)
            total = total + d.mean(dim=(1, 2))
        return total

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PerceptualLoss":
        """Load VGG-16 (and optional LPIPS lin) weights; strict: every conv tensor present with its shape."""

        p = os.fspath(path)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"perceptual weights {p!r} not found (nothing is downloaded: give a local "
                                    f"VGG-16 state dict in torchvision's layout)")
        sd = read_state_dict(p, what="perceptual weights")
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise CheckpointError(f"perceptual weights {p!r}: expected a state dict, got {type(sd).__name__}")
        sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}

        def find(suffix):
            hits = [k for k in sd if k == suffix or k.endswith("." + suffix)]
            return sd[hits[0]] if len(hits) == 1 else None

        has_lin = all(find(f"lin{i}.model.1.weight") is not None for i in range(5))
        m = cls(lin=has_lin)
        missing, bad = [], []
        with torch.no_grad():
            for conv, idx in zip(m.convs, _CONVS):
                for name in ("weight", "bias"):
                    t = find(f"features.{idx}.{name}")
                    if t is None:
                        missing.append(f"features.{idx}.{name}")
                    elif t.shape != getattr(conv, name).shape:
                        bad.append(f"features.{idx}.{name} {tuple(t.shape)} != {tuple(getattr(conv, name).shape)}")
                    else:
                        getattr(conv, name).copy_(t.float())
            if has_lin:
                for i in range(5):
                    t = find(f"lin{i}.model.1.weight")
                    if t.shape != m.lins[i].shape:
                        bad.append(f"lin{i}.model.1.weight {tuple(t.shape)} != {tuple(m.lins[i].shape)}")
                    else:
                        m.lins[i].copy_(t.float())
        if missing or bad:
            raise CheckpointError(f"perceptual weights {p!r} are not VGG-16 in torchvision's layout: missing "
                                  f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, wrong shapes {bad[:8]}")
        return m
