"""A small CNN that recognises the Unicode group (9) and subgroup (99 in emoji-test.txt, 97 in the default catalog)
of an emoji picture (lddgan_core.data.emoji); its pooled 128-d activations are the feature space of the emoji
evaluation (lddgan_core.eval.emoji_eval: FID, precision/recall, density/coverage, memorisation check) and its
group predictions give the group histograms.

The shipped file (lddgan_core/eval/emoji_classifier.safetensors) is reproduced, equal tensors and metadata (on
one CPU thread, same torch version, same font and emoji-test.txt; the safetensors library may order the header
differently), by

    OMP_NUM_THREADS=1 python -m lddgan_core.eval.emoji_classifier --out lddgan_core/eval/emoji_classifier.safetensors

Measured with torch 2.13 (CPU), fonts-noto-color-emoji 2.042, emoji-test.txt 15.0: 1,400 steps of 64 emoji + 8
outlier images, ~0.39 s a step on one thread when it has a core to itself: 616 s of CPU time in all (571 s user,
45 s system, data and checks included); on a 2-core machine shared with two other training jobs the wall clock
was 15.5 and 19 min (the two runs gave equal tensors and metadata; a third, after the data module began to drop
exact-duplicate glyphs, which only changed the held-out split, gave the same tensors: 974 s on the clock). Accuracy, group / subgroup:

  train split (1,370 emoji it learnt), clean           90.5 % / 79.7 %
  train split, augmented (seed CHECK_SEED)             86.2 % / 74.7 %
  held-out split (238 emoji it never saw), clean       68.1 % / 42.4 %   <- the generalisation figure
  held-out split, augmented                            66.8 % / 41.6 %
  held-out split rendered at 32 px                     67.2 % / 40.3 %
  always the largest group (People & Body)             26.9 %

`--steps N` trades time for accuracy (the default is what fits ~10 minutes of one core).

It trains on the TRAIN split only (1,370 emoji at 64 px), so the 238 held-out emoji stay unseen: they are other
emoji, not other pictures of the same ones, so group accuracy on them is the honest generalisation figure
(subgroup accuracy on them is reported too, but many subgroups hold a handful of emoji). With one picture per
emoji the augmentation is strong: random zoom / shift / small rotation / horizontal flip on the white
background, lower resolution (32 or 48 px and back, so that 32 and 48 px inputs are in distribution), blur,
colour jitter, a tint of the background, noise. Outlier exposure (tile-shuffled emoji and smooth noise trained
towards the uniform prediction of both heads) keeps its confidence low on images that show no emoji.
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
from ..errors import CheckpointError, ConfigError, InputError
from ..formats.lddgan_file import key_mismatch
from ..formats.safe_load import read_safetensors
from .classifier import StagedCNN, _blur, learning_rate, outlier_images

FORMAT_NAME = "lddgan-emoji-classifier"
FORMAT_VERSION = 1
# beside this module and the shapes classifier (lddgan_core/models holds LDDGAN models; the node pack lists it)
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emoji_classifier.safetensors")
CHECK_SEED = 1234  # the augmentation of the reported "augmented" accuracies (not the training stream)


@dataclass(frozen=True)
class EmojiClassifierConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128, 128)  # one stage per entry; stage s works at image_size / 2**s
    convs: tuple[int, ...] = (1, 1, 1, 1, 1)  # 3x3 convolutions (each GroupNorm + SiLU) per stage
    groups: int = 8  # GroupNorm groups (no running statistics: train and eval behave the same)
    num_groups: int = 9  # group head: len(lddgan_core.data.emoji.group_names())
    num_subgroups: int = 99  # subgroup head: len(subgroup_names()), the file's indices (2 are country flags)
    image_size: int = 64  # inputs of other sizes are resized (bilinear, antialiased) to this

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EmojiClassifierConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"EmojiClassifierConfig: unknown fields {unknown}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        cfg = cls(**d)
        if len(cfg.channels) != len(cfg.convs) or not cfg.channels or min(cfg.convs) < 1:
            raise ConfigError(f"EmojiClassifierConfig: channels {cfg.channels} and convs {cfg.convs} must be "
                              f"non-empty, of equal length, with >= 1 conv per stage")
        if cfg.image_size % 2 ** (len(cfg.channels) - 1) or cfg.num_groups < 1 or cfg.num_subgroups < 1:
            raise ConfigError(f"EmojiClassifierConfig: image_size {cfg.image_size} must be divisible by "
                              f"2**(stages - 1) and the heads non-empty")
        return cfg


class EmojiClassifier(StagedCNN):
    """images [N, 3, H, W] -> features [N, D] (global average pool of the last stage) -> group logits [N, 9] and
    subgroup logits [N, 99] (two linear heads on the shared trunk, classifier.StagedCNN: stages keyed by
    resolution '64x64', '32x32', ...)."""

    WHAT = "emoji classifier"

    def __init__(self, config: EmojiClassifierConfig = EmojiClassifierConfig()):
        super().__init__(config)
        self.group_head = nn.Linear(self.width, config.num_groups)
        self.subgroup_head = nn.Linear(self.width, config.num_subgroups)

    def heads(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.group_head(f), self.subgroup_head(f)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images -> (group logits [N, num_groups], subgroup logits [N, num_subgroups])."""
        return self.heads(self.pooled(self.prepare(images)))

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        """{"features" [N, D], "group_logits" [N, G], "subgroup_logits" [N, S]}: float32 on the CPU, computed
        `batch` images at a time."""
        out = {"features": [], "group_logits": [], "subgroup_logits": []}
        for chunk in images.split(batch):
            f = self.pooled(self.prepare(chunk))
            g, s = self.heads(f)
            for k, v in zip(out, (f, g, s)):
                out[k].append(v.float().cpu())
        c = self.config
        if not out["features"]:
            return {"features": torch.zeros(0, c.feature_dim), "group_logits": torch.zeros(0, c.num_groups),
                    "subgroup_logits": torch.zeros(0, c.num_subgroups)}
        return {k: torch.cat(v) for k, v in out.items()}

    def features(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """images [N, 3, H, W] (float in [-1, 1] or uint8) -> features [N, D=128]."""
        return self.run(images, batch)["features"]

    def predict(self, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """images -> (predicted group, predicted subgroup), int64 [N] each (indices of group_names() and
        subgroup_names() of lddgan_core.data.emoji)."""
        r = self.run(images, batch)
        return r["group_logits"].argmax(1), r["subgroup_logits"].argmax(1)


# -- persistence ---------------------------------------------------------------------------------------------
def save_classifier(model: EmojiClassifier, path: str, info: dict | None = None) -> str:
    """Write weights + config (+ training info) to a safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(model.config.to_dict(), sort_keys=True),
            "info": json.dumps(info or {}, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_classifier(path: str | None = None, device="cpu") -> EmojiClassifier:
    """Load an emoji classifier file (default: the shipped one) strictly; eval mode. ``.info`` holds its
    training info (config, accuracies, the data's provenance and group / subgroup names)."""
    path = os.fspath(path or DEFAULT_PATH)
    tensors, meta = read_safetensors(path, what="emoji classifier")
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(f"emoji classifier file {path!r}: not a {FORMAT_NAME} file (metadata format "
                              f"{meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"emoji classifier file {path!r}: format_version {meta.get('format_version')!r} is "
                              f"not supported (expected {FORMAT_VERSION})")
    try:
        cfg = EmojiClassifierConfig.from_dict(json.loads(meta["config"]))
        info = json.loads(meta.get("info", "{}"))
    except (ValueError, TypeError, ConfigError) as e:
        raise CheckpointError(f"emoji classifier file {path!r}: bad config metadata: {e}") from None
    model = EmojiClassifier(cfg)
    missing, unexpected, shapes = key_mismatch(model.state_dict(), tensors)
    if missing or unexpected or shapes:
        raise CheckpointError(f"emoji classifier file {path!r} does not match its config: missing {missing[:20]}, "
                              f"unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}")
    model.load_state_dict(tensors, strict=True)
    model.info, model.path = info, path
    return model.to(device).eval()


load_emoji_classifier = load_classifier  # the name lddgan_core.eval exports (load_classifier is the shapes one)


# -- training ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmojiTrainConfig:
    steps: int = 1400
    batch_size: int = 64
    lr: float = 2e-3  # Adam, cosine decay to 0 after `warmup` linear steps (classifier.learning_rate)
    warmup: int = 100
    weight_decay: float = 5e-4  # on conv / linear weights only
    label_smoothing: float = 0.1  # one picture per emoji: do not let it become certain of each
    subgroup_weight: float = 1.0  # loss = CE(group) + subgroup_weight * CE(subgroup)
    seed: int = 0  # weights init, batch order, augmentation
    # augmentation (in [-1, 1] units); each image gets its own random strength
    affine_prob: float = 0.85  # zoom / shift / rotation / flip, the uncovered border filled with white
    zoom: tuple[float, float] = (0.75, 1.15)  # the emoji's scale factor
    shift: float = 0.12  # translation, fraction of the image side
    rotate: float = 12.0  # degrees
    flip_prob: float = 0.5  # horizontal (an emoji's group does not depend on its facing)
    lowres_prob: float = 0.3  # downsample to 32 or 48 px (antialiased) and back: the other dataset sizes
    blur_prob: float = 0.3  # Gaussian blur with sigma ~ U(0.3, blur_sigma)
    blur_sigma: float = 1.0
    brightness: float = 0.12  # + U(-b, b)
    contrast: float = 0.2  # (x - mean) * U(1 - c, 1 + c) + mean
    saturation: float = 0.3  # blend with the grey image by U(1 - s, 1 + s)
    tint: float = 0.12  # near-white background pixels darkened per channel by U(0, tint): off-white backgrounds
    noise_std: float = 0.08  # additive Gaussian noise, std ~ U(0, noise_std)
    # outlier exposure (Hendrycks et al. 2019), as for the shapes classifier: both heads towards uniform
    outliers: int = 8  # per step, on top of batch_size
    outlier_weight: float = 0.5
    outlier_tile: int = 16  # tile side of the shuffled images (divides image_size)


def augment(x: torch.Tensor, cfg: EmojiTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Label-preserving changes of a batch [N, 3, H, W] in [-1, 1] of emoji on white (see EmojiTrainConfig)."""
    n, _, h, w = x.shape
    u = torch.rand(n, 14, generator=g)
    # geometry: output pixel p samples the input at A p + t (normalised coordinates); the emoji grows by `scale`
    scale = cfg.zoom[0] + (cfg.zoom[1] - cfg.zoom[0]) * u[:, 0]
    angle = torch.deg2rad(cfg.rotate * (2 * u[:, 1] - 1))
    flip = torch.where(u[:, 2] < cfg.flip_prob, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, 2 * cfg.shift * (2 * u[:, 3] - 1)], 1),
                         torch.stack([sin * flip, cos, 2 * cfg.shift * (2 * u[:, 4] - 1)], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    moved = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1  # white fill
    x = torch.where((u[:, 5] < cfg.affine_prob)[:, None, None, None], moved, x)
    # lower resolution and back
    low = u[:, 6] < cfg.lowres_prob
    for res, pick in ((32, low & (u[:, 7] < 0.5)), (48, low & (u[:, 7] >= 0.5))):
        if pick.any() and res < h:
            small = F.interpolate(x[pick], size=(res, res * w // h), mode="bilinear", align_corners=False,
                                  antialias=True)
            x = x.clone()
            x[pick] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    sigma = torch.where(u[:, 8] < cfg.blur_prob, 0.3 + (cfg.blur_sigma - 0.3) * u[:, 9], torch.zeros(n))
    x = torch.where(sigma[:, None, None, None] > 0, _blur(x, sigma), x)
    # background tint: the weight is 1 on white, 0 below 90 % brightness in every channel
    white = ((x.min(1, keepdim=True).values + 1) / 2 - 0.9).clamp(0, 0.1) * 10
    x = x - white * cfg.tint * 2 * torch.rand(n, 3, 1, 1, generator=g)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (1 + cfg.saturation * (2 * u[:, 10, None, None, None] - 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + cfg.contrast * (2 * u[:, 11, None, None, None] - 1))
    x = x + cfg.brightness * (2 * u[:, 12, None, None, None] - 1)
    x = x + cfg.noise_std * u[:, 13, None, None, None] * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)


def _accuracies(model: EmojiClassifier, x: torch.Tensor, labels: dict, prefix: str) -> dict:
    g, s = model.predict(x)
    return {f"{prefix}_group_accuracy": float((g == labels["group"]).double().mean()),
            f"{prefix}_subgroup_accuracy": float((s == labels["subgroup"]).double().mean())}


def _data_info(font=None, emoji_test=None) -> dict:
    """What identifies the training pictures (paths left out: they differ between machines)."""
    from ..data import emoji as E

    src = E.source_info(font, emoji_test)
    keep = ("render_version", "font_sha256", "font_version", "emoji_test_sha256", "emoji_test_version",
            "skin_tones", "country_flags", "heldout_fraction", "split_salt")
    return {k: src[k] for k in keep}


def train_classifier(cfg: EmojiTrainConfig = EmojiTrainConfig(), arch: EmojiClassifierConfig = EmojiClassifierConfig(),
                     catalog=None, font=None, emoji_test=None, log=None) -> tuple[EmojiClassifier, dict]:
    """Train deterministically on one CPU thread on the train split of `catalog` (default: load_catalog());
    returns (model in eval mode, info: the training config, the accuracies, the data's identity and the group /
    subgroup names; no timings, so that the saved file is reproducible)."""
    from ..data import emoji as E

    log = log or (lambda m: None)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError(f"emoji classifier training: steps and batch_size must be >= 1, got {cfg.steps}, "
                         f"{cfg.batch_size}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # determinism, and it shares the machine
    try:
        t0 = time.perf_counter()
        catalog = E.load_catalog(font, emoji_test) if catalog is None else catalog
        groups, subgroups = E.group_names(emoji_test), E.subgroup_names(emoji_test)
        if (len(groups), len(subgroups)) != (arch.num_groups, arch.num_subgroups):
            raise ConfigError(f"emoji classifier: the heads ({arch.num_groups} groups, {arch.num_subgroups} "
                              f"subgroups) do not fit emoji-test.txt ({len(groups)}, {len(subgroups)})")
        images, labels = E.make_emoji("train", arch.image_size, catalog, font)
        x = images.float() / 127.5 - 1
        yg, ys = labels["group"], labels["subgroup"]
        log(f"training data: {len(x)} train-split emoji at {arch.image_size} px in {time.perf_counter() - t0:.1f} s")
        torch.manual_seed(cfg.seed)
        model = EmojiClassifier(arch)
        decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1]
        other = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
        opt = torch.optim.Adam([{"params": decay, "weight_decay": cfg.weight_decay},
                                {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
        g = torch.Generator().manual_seed(cfg.seed)
        bs = min(cfg.batch_size, len(x))
        order, pos = torch.randperm(len(x), generator=g), 0
        t1, losses = time.perf_counter(), []
        model.train()
        for step in range(cfg.steps):
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            if pos + bs > len(x):
                order, pos = torch.randperm(len(x), generator=g), 0
            idx = order[pos:pos + bs]
            pos += bs
            batch = augment(x[idx], cfg, g)
            junk = outlier_images(batch, cfg.outliers, g, tile=cfg.outlier_tile)
            lg, ls = model.heads(model.pooled(torch.cat([batch, junk])))
            loss = (F.cross_entropy(lg[:bs], yg[idx], label_smoothing=cfg.label_smoothing)
                    + cfg.subgroup_weight * F.cross_entropy(ls[:bs], ys[idx], label_smoothing=cfg.label_smoothing))
            if cfg.outliers:  # cross-entropy to the uniform distribution, both heads
                loss = loss - cfg.outlier_weight * (lg[bs:].log_softmax(1).mean()
                                                    + cfg.subgroup_weight * ls[bs:].log_softmax(1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (step + 1) % 200 == 0 or step == 0:
                log(f"step {step + 1}/{cfg.steps}  loss {loss.item():.4f}  lr {lr:.2e}  "
                    f"{time.perf_counter() - t1:.0f} s")
        model.eval()
        train_s = time.perf_counter() - t0
        held, held_labels = E.make_emoji("heldout", arch.image_size, catalog, font)
        gc = torch.Generator().manual_seed(CHECK_SEED)
        info = {"train": json.loads(json.dumps(asdict(cfg))), "train_images": len(x), "heldout_images": len(held),
                "first_loss": losses[0], "last_loss": sum(losses[-20:]) / len(losses[-20:])}
        info.update(_accuracies(model, images, labels, "train"))
        info.update(_accuracies(model, augment(x, cfg, gc), labels, "train_augmented"))
        info.update(_accuracies(model, held, held_labels, "heldout"))
        info.update(_accuracies(model, augment(held.float() / 127.5 - 1, cfg, gc), held_labels, "heldout_augmented"))
        if arch.image_size > 32:  # 32 px renderings (resized up by prepare)
            info.update(_accuracies(model, E.make_emoji("heldout", 32, catalog, font)[0], held_labels, "heldout_32px"))
        info.update(chance_group_accuracy=float(torch.bincount(held_labels["group"]).max()) / len(held),
                    data=_data_info(font, emoji_test), group_names=list(groups), subgroup_names=list(subgroups))
        log(f"accuracy (group / subgroup): train clean {100 * info['train_group_accuracy']:.1f}% / "
            f"{100 * info['train_subgroup_accuracy']:.1f}%, held-out {100 * info['heldout_group_accuracy']:.1f}% / "
            f"{100 * info['heldout_subgroup_accuracy']:.1f}% "
            f"(majority-class {100 * info['chance_group_accuracy']:.1f}%)"
            f"; training {train_s:.0f} s, {time.perf_counter() - t0:.0f} s in all (data included)")
        return model, info
    finally:
        torch.set_num_threads(threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lddgan_core.eval.emoji_classifier",
                                description="train the emoji group/subgroup classifier of the emoji evaluation")
    p.add_argument("--out", default=DEFAULT_PATH, help="output .safetensors (default: the shipped file)")
    p.add_argument("--steps", type=int, default=EmojiTrainConfig.steps)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        model, info = train_classifier(EmojiTrainConfig(steps=a.steps),
                                       log=lambda m: print(m, file=sys.stderr, flush=True))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    save_classifier(model, a.out, info)
    print(f"wrote {a.out} in {seconds:.0f} s: " + json.dumps(
        {k: round(v, 4) for k, v in info.items() if k.endswith("accuracy")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
