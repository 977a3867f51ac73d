"""Files of a training run: where they go, the loss log (CSV), and the discriminator as safetensors."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass


from ..atomic import atomic_write, atomic_write_text

AE_LOG_COLUMNS = ("step", "loss", "rec", "perceptual", "kl", "codebook", "g_adv", "d_weight", "d_loss", "lr",
                  "seconds")
LOG_COLUMNS = ("step", "d_loss", "d_real", "d_fake", "r1", "g_loss", "g_adv", "rec", "w", "lr_g", "lr_d", "seconds")
DISC_FORMAT = "lddgan-discriminator"


@dataclass(frozen=True)
class RunPaths:
    """Output files of a run; any may be None (not written)."""

    state: str | None = None  # training state (.pt): resume point
    model: str | None = None  # the trained model in our .safetensors format (EMA generator)
    discriminator: str | None = None  # D as .safetensors (a later fine-tune can start from it)
    log_csv: str | None = None  # one row per log interval
    curve_png: str | None = None  # loss curve
    samples_dir: str | None = None  # sample grids step_XXXXXXX.png
    cache_dir: str | None = None  # encoded latents

    @classmethod
    def in_dir(cls, run_dir: str, kind: str = "gan") -> "RunPaths":
        """A run folder: train_state.pt, model.safetensors (autoencoder.safetensors for kind="autoencoder"),
        discriminator.safetensors, losses.csv, loss_curve.png, samples/, cache/."""
        j = lambda n: os.path.join(run_dir, n)  # noqa: E731
        model = "autoencoder.safetensors" if kind == "autoencoder" else "model.safetensors"
        return cls(j("train_state.pt"), j(model), j("discriminator.safetensors"), j("losses.csv"),
                   j("loss_curve.png"), j("samples"), j("cache"))

    @classmethod
    def beside(cls, model_path: str) -> "RunPaths":
        """For a model file `x.safetensors`: x.train.pt, x.discriminator.safetensors, x.losses.csv,
        x.loss_curve.png next to it, and the latent cache in x.cache/."""
        stem = model_path[: -len(".safetensors")] if model_path.endswith(".safetensors") else model_path
        return cls(stem + ".train.pt", model_path, stem + ".discriminator.safetensors", stem + ".losses.csv",
                   stem + ".loss_curve.png", None, stem + ".cache")


def write_log(path: str, rows: list[dict], columns=LOG_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def append_log(path: str, row: dict, columns=LOG_COLUMNS) -> None:
    with open(path, "a", encoding="utf-8", newline="") as f:
        csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n").writerow(
            {k: _cell(row.get(k)) for k in columns})


def read_log(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def save_discriminator(D, path: str) -> str:
    """D's weights and config in one .safetensors (metadata format 'lddgan-discriminator')."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in D.state_dict().items()}
    meta = {"format": DISC_FORMAT, "format_version": "1", "config": json.dumps(D.cfg.to_dict(), sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
