"""The training loop around GANTrainer: loss log, sample grids, checkpoints, progress and interruption."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..data.images import make_grid, save_png
from ..diffusion.sampler import torch_seed
from . import dist as tdist
from .files import append_log, RunPaths, write_log
from .plots import loss_curve
from .trainer import save_state

ProgressFn = Callable[[int, int, dict, "torch.Tensor | None"], None]


@dataclass
class FitResult:
    model: object  # the trained LDDGAN (EMA generator), a new object; None on ranks other than 0
    losses: list[dict]  # loss-log rows (step, d_loss, g_adv, rec, w, ...)
    loss_curve: np.ndarray  # uint8 [H, W, 3]
    sample_grid: np.ndarray | None  # uint8 [H, W, 3] of the final EMA samples (None if not made)
    checkpoint_path: str | None  # the training state written last (None if none)
    step: int  # iterations done
    interrupted: bool = False  # should_stop() ended the run early
    files: dict = field(default_factory=dict)  # what was written: model, discriminator, log_csv, curve_png
    rank_weight_difference: float | None = None  # torchrun: max |w_rank - w_rank0| at the end (0.0: in sync)


class _Averager:
    """Means of the per-iteration losses over one log interval (keys absent in some iterations, like r1,
    are averaged over the iterations that have them)."""

    def __init__(self):
        self.sum, self.n = {}, {}

    def add(self, logs: dict):
        for k, v in logs.items():
            if isinstance(v, (int, float)) and k not in ("step",):
                self.sum[k] = self.sum.get(k, 0.0) + float(v)
                self.n[k] = self.n.get(k, 0) + 1

    def row(self, step: int, last: dict, instant=("w", "lr", "lr_g", "lr_d", "d_weight")) -> dict:
        row = {k: self.sum[k] / self.n[k] for k in self.sum}
        row.update({k: last[k] for k in instant if k in last}, step=step)  # schedule values at the row's step
        self.sum, self.n = {}, {}
        return row


def sample_seeds(trainer) -> list[int]:
    return [torch_seed(trainer.cfg.seed * 1000 + i) for i in range(trainer.cfg.num_samples)]


def fit(trainer, paths: RunPaths | None = None, *, progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None,
        provenance: dict | None = None, preview_every: int | None = None) -> FitResult:
    """Train until trainer.cfg.steps iterations are done, continuing from trainer.step.

    trainer: a GANTrainer or an AutoencoderTrainer (train_step, state_dict, sample_images, finish,
    synced_modules, history, log_columns, curve_keys).

    progress(step, total, logs, preview) is called after every iteration; preview is the EMA sample batch
    [n, 3, H, W] in [-1, 1] on sample / preview iterations, else None. should_stop() is polled before every
    iteration; True ends the run early (result.interrupted). Either way, and when progress raises, the state
    after the last completed iteration is saved to paths.state, so a later fit from that file continues.
    An exception inside an iteration leaves the last periodic checkpoint as the resume point."""
    paths = paths or RunPaths()
    cfg, world = trainer.cfg, trainer.world
    main = world.is_main
    write = lambda p: p is not None and main  # noqa: E731
    if write(paths.log_csv):
        write_log(paths.log_csv, trainer.history, trainer.log_columns)
    seeds = sample_seeds(trainer)
    saved_step = trainer.step if paths.state and os.path.isfile(paths.state) else -1
    avg, t0, in_step, interrupted, preview = _Averager(), time.perf_counter(), False, False, None
    elapsed0 = trainer.history[-1].get("seconds", 0.0) if trainer.history else 0.0

    def checkpoint(sync: bool = True):
        nonlocal saved_step
        if write(paths.state) and trainer.step != saved_step:
            save_state(paths.state, trainer.state_dict())
            saved_step = trainer.step
            if paths.curve_png:
                save_png(loss_curve(trainer.history, trainer.curve_keys), paths.curve_png)
        if sync:
            tdist.barrier(world)

    try:
        while trainer.step < cfg.steps:
            stop = bool(should_stop()) if should_stop is not None else False
            if world.active:  # every rank must stop at the same iteration
                stop = tdist.any_true(stop, world, trainer.device)
            if stop:
                interrupted = True
                break
            in_step = True
            logs = trainer.train_step()
            in_step = False
            s = trainer.step
            if not all(math.isfinite(v) for k, v in logs.items() if isinstance(v, float)):
                raise FloatingPointError(f"training diverged at iteration {s}: losses {logs}")
            avg.add(logs)
            if s % cfg.log_every == 0 or s == cfg.steps:
                row = avg.row(s, logs)
                row["seconds"] = elapsed0 + time.perf_counter() - t0
                trainer.history.append(row)
                if write(paths.log_csv):
                    append_log(paths.log_csv, row, trainer.log_columns)
            preview = None
            want_sample = cfg.sample_every and s % cfg.sample_every == 0
            want_preview = progress is not None and preview_every and s % preview_every == 0
            if (want_sample or want_preview) and main:
                preview = trainer.sample_images(seeds)
                if want_sample and paths.samples_dir:
                    save_png(make_grid(preview), os.path.join(paths.samples_dir, f"step_{s:07d}.png"))
            if cfg.save_every and s % cfg.save_every == 0:
                checkpoint()
            if progress is not None:
                progress(s, cfg.steps, logs, preview)
    except BaseException:
        if not in_step:
            try:
                checkpoint(sync=False)  # the state after the last completed iteration (other ranks may be gone)
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        raise
    if interrupted or trainer.step >= cfg.steps:
        checkpoint()

    files, model, grid, diff = {}, None, None, None
    if world.active:  # data parallelism keeps the weights identical on every rank; check it once at the end
        diff = tdist.max_rank_difference(trainer.synced_modules(), world, trainer.device)
        if diff != 0.0:
            raise RuntimeError(f"data-parallel ranks diverged: max weight difference {diff:.3g} across "
                               f"{world.size} processes")
        if log and main:
            log(f"data parallel: the {world.size} processes hold identical weights (max difference {diff:g})")
    curve = loss_curve(trainer.history, trainer.curve_keys)
    if main:
        model, written = trainer.finish(paths, provenance)
        files.update(written)
        if not interrupted:
            images = preview if preview is not None else trainer.sample_images(seeds)
            grid = make_grid(images)
            if paths.samples_dir:
                files["samples"] = save_png(grid, os.path.join(paths.samples_dir, f"step_{trainer.step:07d}.png"))
        if paths.curve_png:
            files["curve_png"] = save_png(curve, paths.curve_png)
        if paths.log_csv:
            files["log_csv"] = paths.log_csv
        if log:
            log(f"step {trainer.step}/{cfg.steps}: " + ", ".join(f"{k} {v}" for k, v in files.items()))
    tdist.barrier(world)
    return FitResult(model, list(trainer.history), curve, grid, paths.state if saved_step >= 0 else None,
                     trainer.step, interrupted, files, diff)
