"""The FID Inception-v3 feature extractor, built from a weights file the user already has.

    net = load_inception("models/pt_inception-2015-12-05-6726825d.pth")   # eval mode, CPU
    feats = net(images)                                                    # [N, 3, H, W] in [-1, 1] -> [N, 2048]

This is the graph FID is defined on: TensorFlow's 2015 Inception (``inception-2015-12-05.tgz``) as ported to
PyTorch by pytorch-fid (mseitzer/pytorch-fid, weights ``pt_inception-2015-12-05-6726825d.pth``, 1008 classes).
It has torchvision's ``Inception3`` module names, so state-dict keys match both, but three block kinds behave
differently from torchvision's ImageNet model:

* the pooling branch of the A, C and first E blocks (Mixed_5b-5d, 6b-6e, 7b) averages 3x3 windows without the
  zero padding (``count_include_pad=False``), as TensorFlow's average pool does;
* the pooling branch of the last E block (Mixed_7c) is a 3x3 *max* pool;
* BatchNorm eps is 1e-3 (TensorFlow's default), as in torchvision.

Input handling follows pytorch-fid: bilinear resize to 299x299 (``align_corners=False``, no antialiasing) of
images in [-1, 1]. pytorch-fid resizes [0, 1] images and then maps them to [-1, 1]; bilinear weights sum to one,
so the two orders agree up to float rounding. The output is the 2048-d average-pooled feature before the
classifier (``fc`` is kept only so the file's keys load strictly; it is never evaluated).

Nothing is downloaded here: a missing file is an error that says where the weights come from.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..formats.safe_load import read_state_dict

__all__ = ["FIDInceptionV3", "load_inception", "FID_WEIGHTS_NAME", "FID_WEIGHTS_URL", "FEATURE_DIM"]

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# Where the user can fetch the file by hand; this module never opens a network connection.
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the 2015 TF graph's classifier: 1000 ImageNet classes + 8 unused
INPUT_SIZE = 299

_LAYOUT = (f"the pytorch-fid FID Inception layout ({FID_WEIGHTS_NAME}: keys such as "
           f"'Conv2d_1a_3x3.conv.weight', 'Mixed_5b.branch1x1.bn.running_mean', "
           f"'fc.weight' [{NUM_CLASSES}, {FEATURE_DIM}]; a torchvision inception_v3 state dict with "
           f"these names is accepted too, its 'AuxLogits.*' keys are ignored)")


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU. Keys: ``conv.weight``, ``bn.{weight,bias,running_*}``."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    """3x3 stride-1 average over the valid (unpadded) pixels only, like TensorFlow's SAME avg pool."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | TF-avgpool->1x1. Out 224 + pool_ch."""

    def __init__(self, cin: int, pool_ch: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_ch, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class BlockB(nn.Module):
    """Mixed_6a, 35x35 -> 17x17: stride-2 3x3 | 1x1->3x3->stride-2 3x3 | stride-2 max pool. Out 480 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """Mixed_6b-6e (17x17), factorised 7x7 convs of width c7: 1x1 | 1x7,7x1 | 7x1,1x7,7x1,1x7 | TF-avgpool. Out 768."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, **row)
        self.branch7x7_3 = ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = conv(c)
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class BlockD(nn.Module):
    """Mixed_7a, 17x17 -> 8x8: 1x1->stride-2 3x3 | 1x1,1x7,7x1->stride-2 3x3 | stride-2 max pool. Out 512 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """Mixed_7b/7c (8x8): 1x1 | 1x1->(1x3 ++ 3x1) | 1x1->3x3->(1x3 ++ 3x1) | pool->1x1. Out 2048.

    ``pool`` is "avg" (TF average, Mixed_7b) or "max" (Mixed_7c: the 2015 graph max-pools there).
    """

    def __init__(self, cin: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], 1)


class FIDInceptionV3(nn.Module):
    """[N, 3, H, W] in [-1, 1] -> [N, 2048] pool features of the FID Inception graph (weights: load_inception)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_ch=32)
        self.Mixed_5c = BlockA(256, pool_ch=64)
        self.Mixed_5d = BlockA(288, pool_ch=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        # The 1008-way classifier of the 2015 graph: loaded (the file has it) but never evaluated.
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"FID Inception expects images [N, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        x = x.to(self.fc.weight.device, torch.float32)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):  # at 299x299 this resize would be the identity
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))   # [N, 64, 147, 147]
        x = F.max_pool2d(x, 3, stride=2)                                   # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                      # [N, 192, 71, 71]
        x = F.max_pool2d(x, 3, stride=2)                                   # [N, 192, 35, 35]
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))                 # [N, 288, 35, 35]
        x = self.Mixed_6a(x)                                               # [N, 768, 17, 17]
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # [N, 768, 17, 17]
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))                 # [N, 2048, 8, 8]
        return x.mean(dim=(2, 3))                                          # [N, 2048]


def _preview(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _match_state_dict(net: FIDInceptionV3, sd: dict, label: str) -> dict:
    """Return the tensors to load into ``net``; raise CheckpointError listing every mismatch.

    Rules: ``AuxLogits.*`` (torchvision's auxiliary classifier) is ignored; BatchNorm ``num_batches_tracked``
    counters may be absent (unused in eval mode); every other key must be present, known and of the same shape.
    """
    expected = net.state_dict()
    ignored = [k for k in sd if isinstance(k, str) and k.startswith("AuxLogits.")]
    missing = [k for k in expected if k not in sd and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected and k not in ignored]
    not_tensor = [f"{k} ({type(sd[k]).__name__})" for k in expected if k in sd and not torch.is_tensor(sd[k])]
    shapes = [f"{k} {list(sd[k].shape)} (expected {list(v.shape)})" for k, v in expected.items()
              if k in sd and torch.is_tensor(sd[k]) and sd[k].shape != v.shape]
    if missing or unexpected or not_tensor or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview([str(k) for k in unexpected])}")
        if not_tensor:
            parts.append(f"not tensors: {_preview(not_tensor)}")
        if shapes:
            parts.append(f"shape mismatches: {_preview(shapes)}")
        fc = sd.get("fc.weight")
        if torch.is_tensor(fc) and fc.ndim == 2 and fc.shape[0] == 1000:
            parts.append("fc has 1000 classes: this looks like torchvision's ImageNet inception_v3 weights, which "
                         "are not the FID weights (their features differ, so FID values would not be comparable "
                         f"with published ones); use {FID_WEIGHTS_NAME}")
        raise CheckpointError(f"{label} does not match {_LAYOUT}: " + "; ".join(parts))
    out = {k: sd[k] if k in sd else v for k, v in expected.items()}
    return {k: (v.to(expected[k].dtype) if v.is_floating_point() else v) for k, v in out.items()}


def load_inception(path: str | os.PathLike, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build the FID Inception-v3 from a local weights file (.pth or .safetensors); eval mode, on ``device``.

    Accepts pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (or a safetensors copy of it) and torchvision
    ``inception_v3(num_classes=1008)`` state dicts with the same key names (``AuxLogits.*`` ignored). The file is
    read with :mod:`lddgan_core.formats.safe_load` (no pickled code runs); loading is strict (see ``_match_state_dict``).
    Nothing is ever downloaded.
    """

    p = os.fspath(path)
    if not os.path.exists(p):
        raise CheckpointError(
            f"FID Inception weights file '{p}' does not exist. Nothing is downloaded automatically: get "
            f"pytorch-fid's {FID_WEIGHTS_NAME} (about 96 MB) from {FID_WEIGHTS_URL} (or copy it from "
            f"~/.cache/torch/hub/checkpoints/ where pytorch-fid caches it) and pass its path")
    label = f"FID Inception weights file '{p}'"
    sd = read_state_dict(p, what="FID Inception weights")
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{label} holds a {type(sd).__name__}, not a state dict; expected {_LAYOUT}")
    net = FIDInceptionV3()
    net.load_state_dict(_match_state_dict(net, sd, label), strict=True)
    return net.requires_grad_(False).eval().to(device)
