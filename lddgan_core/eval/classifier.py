"""A small CNN that recognises the 16 modes of the procedural shapes data (lddgan_core.data.shapes); its pooled
128-d activations are the default feature space of ``lddgan eval`` (FID, precision/recall, density/coverage)
and its predictions give the mode histograms.

The shipped file (lddgan_core/eval/shapes_classifier.safetensors) is reproduced, equal tensors and metadata
(on one CPU thread, same torch version; the safetensors library may order the header differently), by

    python -m lddgan_core.eval.classifier --out lddgan_core/eval/shapes_classifier.safetensors

It trains on shapes seed 3 and reports its accuracy on seed 4, data the generator never sees (the default
model trains on seed 0; evaluation uses seeds 1 and 2). Light augmentation (blur, noise, colour jitter) makes
it robust to the softness and grain of generated images; outlier exposure (tile-shuffled images and smooth
noise trained towards the uniform prediction) keeps its confidence low on images that show no clear shape.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import atomic_write
from ..data.shapes import make_shapes, to_model_range
from ..errors import CheckpointError, ConfigError, InputError
from ..formats.lddgan_file import key_mismatch
from ..formats.safe_load import read_safetensors

FORMAT_NAME = "lddgan-shapes-classifier"
FORMAT_VERSION = 1
# beside this module, not in lddgan_core/models (that folder holds LDDGAN models; the node pack lists it)
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes_classifier.safetensors")
TRAIN_DATA_SEED = 3  # not 0 (the model's training data) nor 1, 2 (evaluation data)
CHECK_DATA_SEED = 4


@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # one stage per entry; stage s works at image_size / 2**s
    convs: tuple[int, ...] = (1, 1, 2)  # 3x3 convolutions (each GroupNorm + SiLU) per stage
    groups: int = 8  # GroupNorm groups (no running statistics: train and eval behave the same)
    num_modes: int = 16  # classes: lddgan_core.data.shapes.NUM_MODES
    image_size: int = 32  # inputs of other sizes are resized (bilinear, antialiased) to this

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"ClassifierConfig: unknown fields {unknown}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        cfg = cls(**d)
        if len(cfg.channels) != len(cfg.convs) or not cfg.channels or min(cfg.convs) < 1:
            raise ConfigError(f"ClassifierConfig: channels {cfg.channels} and convs {cfg.convs} must be non-empty, "
                              f"of equal length, with >= 1 conv per stage")
        return cfg


class Stage(nn.Module):
    """convs x (3x3 conv -> GroupNorm -> SiLU) at one resolution."""

    def __init__(self, c_in: int, c_out: int, convs: int, groups: int):
        super().__init__()
        self.convs = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for i in range(convs):
            self.convs[f"conv{i}"] = nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1)
            self.norms[f"conv{i}"] = nn.GroupNorm(groups, c_out)

    def forward(self, x):
        for name, conv in self.convs.items():
            x = F.silu(self.norms[name](conv(x)))
        return x


class StagedCNN(nn.Module):
    """The trunk both project classifiers share: Stage blocks keyed by resolution ('32x32', '16x16', ...) with a
    2x2 average pool between them; images are prepared to the config's size; features are the global average
    pool of the last stage. Subclasses add their heads (after calling __init__) and set WHAT (for errors)."""

    WHAT = "classifier"

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.stages = nn.ModuleDict()
        c_in, res = 3, config.image_size
        for c, n in zip(config.channels, config.convs):
            self.stages[f"{res}x{res}"] = Stage(c_in, c, n, config.groups)
            c_in, res = c, res // 2
        self.width = c_in  # feature dimension

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (0..255) or float ([-1, 1]) [N, 3, H, W] -> float [N, 3, S, S] in [-1, 1] on this module's device."""
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"{self.WHAT}: expected images [N, 3, H, W], got "
                             f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
        p = next(self.parameters())
        x = images.to(p.device)
        x = x.to(p.dtype) / 127.5 - 1 if x.dtype == torch.uint8 else x.to(p.dtype)
        s = self.config.image_size
        if tuple(x.shape[2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """prepared images -> features [N, D]."""
        for i, stage in enumerate(self.stages.values()):
            if i:
                x = F.avg_pool2d(x, 2)
            x = stage(x)
        return x.mean(dim=(2, 3))


class ShapesClassifier(StagedCNN):
    """images [N, 3, H, W] in [-1, 1] -> features [N, D] (global average pool of the last stage) -> logits [N, 16]."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__(config)
        self.head = nn.Linear(self.width, config.num_modes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images -> logits [N, num_modes]."""
        return self.head(self.pooled(self.prepare(images)))

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [N, D], logits [N, num_modes]), float32 on the CPU, computed `batch` images at a time."""
        feats, logits = [], []
        for chunk in images.split(batch):
            f = self.pooled(self.prepare(chunk))
            feats.append(f.float().cpu())
            logits.append(self.head(f).float().cpu())
        d = self.config.feature_dim
        if not feats:
            return torch.zeros(0, d), torch.zeros(0, self.config.num_modes)
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """images [N, 3, H, W] (float in [-1, 1] or uint8) -> features [N, D=128]."""
        return self.run(images, batch)[0]

    def predict(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """images -> predicted modes int64 [N] (see lddgan_core.data.shapes.mode_name)."""
        return self.run(images, batch)[1].argmax(1)


# -- persistence ---------------------------------------------------------------------------------------------
def save_classifier(model: ShapesClassifier, path: str, info: dict | None = None) -> str:
    """Write weights + config (+ training info) to a safetensors file, atomically."""
    from safetensors.torch import save_file


    tensors = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(model.config.to_dict(), sort_keys=True),
            "info": json.dumps(info or {}, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_classifier(path: str | None = None, device="cpu") -> ShapesClassifier:
    """Load a classifier file (default: the shipped one) strictly; eval mode. ``.info`` holds its training info."""

    path = os.fspath(path or DEFAULT_PATH)
    tensors, meta = read_safetensors(path, what="shapes classifier")
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(f"shapes classifier file {path!r}: not a {FORMAT_NAME} file (metadata format "
                              f"{meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"shapes classifier file {path!r}: format_version {meta.get('format_version')!r} is not "
                              f"supported (expected {FORMAT_VERSION})")
    try:
        cfg = ClassifierConfig.from_dict(json.loads(meta["config"]))
        info = json.loads(meta.get("info", "{}"))
    except (ValueError, TypeError, ConfigError) as e:
        raise CheckpointError(f"shapes classifier file {path!r}: bad config metadata: {e}") from None
    model = ShapesClassifier(cfg)
    missing, unexpected, shapes = key_mismatch(model.state_dict(), tensors)
    if missing or unexpected or shapes:
        raise CheckpointError(f"shapes classifier file {path!r} does not match its config: missing {missing[:20]}, "
                              f"unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}")
    model.load_state_dict(tensors, strict=True)
    model.info, model.path = info, path
    return model.to(device).eval()


# -- training ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierTrainConfig:
    train_images: int = 12000  # shapes images of seed `data_seed`
    data_seed: int = TRAIN_DATA_SEED
    check_images: int = 5000  # held-out images of seed `check_seed` for the reported accuracy
    check_seed: int = CHECK_DATA_SEED
    steps: int = 1800
    batch_size: int = 64
    lr: float = 2e-3  # Adam, cosine decay to 0 after `warmup` linear steps
    warmup: int = 100
    weight_decay: float = 1e-4
    seed: int = 0  # weights init, batch order, augmentation
    # augmentation (in [-1, 1] units): each image gets its own random strength
    blur_prob: float = 0.5  # Gaussian blur with sigma ~ U(0.3, blur_sigma)
    blur_sigma: float = 1.2
    noise_std: float = 0.08  # additive Gaussian noise, std ~ U(0, noise_std)
    brightness: float = 0.1  # + U(-b, b)
    contrast: float = 0.15  # (x - mean) * U(1 - c, 1 + c) + mean
    saturation: float = 0.2  # blend with the grey image by U(1 - s, 1 + s)
    # outlier exposure (Hendrycks et al. 2019): extra images without a whole shape (tile-shuffled batch
    # images, smooth noise) trained towards the uniform prediction, so that the confidence on junk is low
    outliers: int = 16  # per step, on top of batch_size
    outlier_weight: float = 0.5


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, sigma [N] per image (0 = unchanged), 5 taps, reflect padding."""
    n, c, h, w = x.shape
    t = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # [N, 5]
    k = k.repeat_interleave(c, 0)  # [N*C, 5]
    y = F.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def augment(x: torch.Tensor, cfg: ClassifierTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Label-preserving degradations of a batch [N, 3, H, W] in [-1, 1]: horizontal flip (every shape is
    mirror-symmetric), blur, colour jitter (no hue change: hue defines the colour family), noise."""
    n = x.shape[0]
    u = torch.rand(n, 7, generator=g)
    x = torch.where(u[:, 0, None, None, None] < 0.5, x.flip(3), x)
    sigma = torch.where(u[:, 1] < cfg.blur_prob, 0.3 + (cfg.blur_sigma - 0.3) * u[:, 2], torch.zeros(n))
    x = torch.where(sigma[:, None, None, None] > 0, _blur(x, sigma), x)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (1 + cfg.saturation * (2 * u[:, 3, None, None, None] - 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + cfg.contrast * (2 * u[:, 4, None, None, None] - 1))
    x = x + cfg.brightness * (2 * u[:, 5, None, None, None] - 1)
    x = x + cfg.noise_std * u[:, 6, None, None, None] * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)


def outlier_images(x: torch.Tensor, n: int, g: torch.Generator, tile: int = 8) -> torch.Tensor:
    """n images [n, 3, H, W] in [-1, 1] that show no shape: half are images of x cut into tile x tile pieces
    shuffled (colours and edges survive, the shape does not), half smooth random noise."""
    if n == 0:
        return x[:0]
    c, h, w = x.shape[1:]
    k = n // 2
    src = x[torch.randint(len(x), (k,), generator=g)]
    th, tw = h // tile, w // tile
    tiles = src.reshape(k, c, th, tile, tw, tile).permute(0, 2, 4, 1, 3, 5).reshape(k, th * tw, c, tile, tile)
    perm = torch.argsort(torch.rand(k, th * tw, generator=g), dim=1)
    tiles = tiles[torch.arange(k)[:, None], perm]
    shuffled = tiles.reshape(k, th, tw, c, tile, tile).permute(0, 3, 1, 4, 2, 5).reshape(k, c, h, w)
    m = n - k
    coarse = torch.randn(m, c, 4, 4, generator=g) * 0.6 + (2 * torch.rand(m, c, 1, 1, generator=g) - 1) * 0.6
    noise = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    noise = noise + 0.15 * torch.rand(m, 1, 1, 1, generator=g) * torch.randn(m, c, h, w, generator=g)
    return torch.cat([shuffled, noise.clamp(-1, 1)])


def learning_rate(step: int, cfg: ClassifierTrainConfig) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup steps, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    angle = torch.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + torch.cos(torch.tensor(angle))).item()  # float32 cos: the shipped file's rounding


def accuracy(model: ShapesClassifier, images: torch.Tensor, modes: torch.Tensor) -> float:
    return float((model.predict(images) == modes).double().mean())


def train_classifier(cfg: ClassifierTrainConfig = ClassifierTrainConfig(),
                     arch: ClassifierConfig = ClassifierConfig(), log=None) -> tuple[ShapesClassifier, dict]:
    """Train deterministically on one CPU thread; returns (model in eval mode, info: the training config and
    the held-out accuracy; no timings, so that the saved file is reproducible)."""

    log = log or (lambda m: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # determinism, and it shares the machine
    try:
        t0 = time.perf_counter()
        images, labels = make_shapes(cfg.train_images, seed=cfg.data_seed, size=arch.image_size)
        x, y = to_model_range(images), labels["mode"]
        log(f"training data: {cfg.train_images} images (shapes seed {cfg.data_seed}) in "
            f"{time.perf_counter() - t0:.1f} s")
        torch.manual_seed(cfg.seed)
        model = ShapesClassifier(arch)
        decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1]
        other = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
        opt = torch.optim.Adam([{"params": decay, "weight_decay": cfg.weight_decay},
                                {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
        g = torch.Generator().manual_seed(cfg.seed)
        order, pos = torch.randperm(len(x), generator=g), 0
        t1 = time.perf_counter()
        model.train()
        for step in range(cfg.steps):
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            if pos + cfg.batch_size > len(x):
                order, pos = torch.randperm(len(x), generator=g), 0
            idx = order[pos:pos + cfg.batch_size]
            pos += cfg.batch_size
            batch = augment(x[idx], cfg, g)
            junk = outlier_images(batch, cfg.outliers, g)
            logits = model.head(model.pooled(torch.cat([batch, junk])))
            loss = F.cross_entropy(logits[:len(idx)], y[idx])
            if cfg.outliers:  # cross-entropy to the uniform distribution
                loss = loss - cfg.outlier_weight * logits[len(idx):].log_softmax(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % 200 == 0 or step == 0:
                log(f"step {step + 1}/{cfg.steps}  loss {loss.item():.4f}  lr {lr:.2e}  "
                    f"{time.perf_counter() - t1:.0f} s")
        model.eval()
        train_s = time.perf_counter() - t0
        check, check_labels = make_shapes(cfg.check_images, seed=cfg.check_seed, size=arch.image_size)
        acc = accuracy(model, check, check_labels["mode"])
        info = {"train": asdict(cfg), "heldout_accuracy": acc, "heldout_seed": cfg.check_seed,
                "heldout_images": cfg.check_images}
        log(f"held-out accuracy {100 * acc:.2f}% on {cfg.check_images} images of shapes seed {cfg.check_seed}; "
            f"training {train_s:.0f} s, {time.perf_counter() - t0:.0f} s in all (data included)")
        return model, info
    finally:
        torch.set_num_threads(threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lddgan_core.eval.classifier",
                                description="train the shapes mode classifier used by `lddgan eval`")
    p.add_argument("--out", default=DEFAULT_PATH, help="output .safetensors (default: the shipped file)")
    p.add_argument("--steps", type=int, default=ClassifierTrainConfig.steps)
    p.add_argument("--train-images", type=int, default=ClassifierTrainConfig.train_images)
    a = p.parse_args(argv)
    cfg = ClassifierTrainConfig(steps=a.steps, train_images=a.train_images)
    t0 = time.perf_counter()
    model, info = train_classifier(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    save_classifier(model, a.out, info)
    print(f"wrote {a.out}: held-out accuracy {100 * info['heldout_accuracy']:.2f}% "
          f"(shapes seed {info['heldout_seed']}, {info['heldout_images']} images), trained in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
