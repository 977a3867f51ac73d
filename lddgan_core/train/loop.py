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


class _Run:
    """The state of one ``fit`` and its named steps: stop decision, log rows, samples / previews, checkpoints,
    the rank check and the final files."""

    def __init__(self, trainer, paths: RunPaths, preview_every: int | None, want_previews: bool):
        self.trainer, self.paths, self.cfg, self.world = trainer, paths, trainer.cfg, trainer.world
        self.main = self.world.is_main
        self.seeds = sample_seeds(trainer)
        self.saved_step = trainer.step if paths.state and os.path.isfile(paths.state) else -1
        self.avg, self.t0 = _Averager(), time.perf_counter()
        self.elapsed0 = trainer.history[-1].get("seconds", 0.0) if trainer.history else 0.0
        self.preview_every = preview_every if want_previews else None
        if self.writes(paths.log_csv):
            write_log(paths.log_csv, trainer.history, trainer.log_columns)

    def writes(self, path) -> bool:
        return path is not None and self.main

    def stop_requested(self, should_stop) -> bool:
        stop = bool(should_stop()) if should_stop is not None else False
        if self.world.active:  # every rank must stop at the same iteration
            stop = tdist.any_true(stop, self.world, self.trainer.device)
        return stop

    def record(self, s: int, logs: dict) -> None:
        """Check the losses, average them, and write a log row every log_every iterations (and at the end)."""
        if not all(math.isfinite(v) for k, v in logs.items() if isinstance(v, float)):
            raise FloatingPointError(f"training diverged at iteration {s}: losses {logs}")
        self.avg.add(logs)
        if s % self.cfg.log_every == 0 or s == self.cfg.steps:
            row = self.avg.row(s, logs)
            row["seconds"] = self.elapsed0 + time.perf_counter() - self.t0
            self.trainer.history.append(row)
            if self.writes(self.paths.log_csv):
                append_log(self.paths.log_csv, row, self.trainer.log_columns)

    def samples(self, s: int):
        """EMA samples on sample_every / preview iterations (rank 0), saved as a grid on sample_every ones."""
        want_sample = self.cfg.sample_every and s % self.cfg.sample_every == 0
        want_preview = self.preview_every and s % self.preview_every == 0
        if not ((want_sample or want_preview) and self.main):
            return None
        preview = self.trainer.sample_images(self.seeds)
        if want_sample and self.paths.samples_dir:
            save_png(make_grid(preview), os.path.join(self.paths.samples_dir, f"step_{s:07d}.png"))
        return preview

    def checkpoint(self, sync: bool = True) -> None:
        """Save the training state (and the loss curve) unless this step is saved already."""
        if self.writes(self.paths.state) and self.trainer.step != self.saved_step:
            save_state(self.paths.state, self.trainer.state_dict())
            self.saved_step = self.trainer.step
            if self.paths.curve_png:
                save_png(loss_curve(self.trainer.history, self.trainer.curve_keys), self.paths.curve_png)
        if sync:
            tdist.barrier(self.world)

    def check_ranks(self, log) -> float | None:
        """Data parallelism keeps the weights identical on every rank: check it once at the end."""
        if not self.world.active:
            return None
        diff = tdist.max_rank_difference(self.trainer.synced_modules(), self.world, self.trainer.device)
        if diff != 0.0:
            raise RuntimeError(f"data-parallel ranks diverged: max weight difference {diff:.3g} across "
                               f"{self.world.size} processes")
        if log and self.main:
            log(f"data parallel: the {self.world.size} processes hold identical weights (max difference {diff:g})")
        return diff

    def finish(self, interrupted: bool, preview, provenance: dict | None, curve: np.ndarray, log) -> tuple:
        """(model, files, grid): the exported model and the run files (rank 0; None / {} elsewhere)."""
        files, model, grid, paths = {}, None, None, self.paths
        if self.main:
            model, written = self.trainer.finish(paths, provenance)
            files.update(written)
            if not interrupted:
                grid = make_grid(preview if preview is not None else self.trainer.sample_images(self.seeds))
                if paths.samples_dir:
                    files["samples"] = save_png(grid, os.path.join(paths.samples_dir,
                                                                   f"step_{self.trainer.step:07d}.png"))
            if paths.curve_png:
                files["curve_png"] = save_png(curve, paths.curve_png)
            if paths.log_csv:
                files["log_csv"] = paths.log_csv
            if log:
                log(f"step {self.trainer.step}/{self.cfg.steps}: " + ", ".join(f"{k} {v}" for k, v in files.items()))
        return model, files, grid


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
    run = _Run(trainer, paths or RunPaths(), preview_every, progress is not None)
    cfg, in_step, interrupted, preview = trainer.cfg, False, False, None
    try:
        while trainer.step < cfg.steps:
            if run.stop_requested(should_stop):
                interrupted = True
                break
            in_step = True
            logs = trainer.train_step()
            in_step = False
            run.record(trainer.step, logs)
            preview = run.samples(trainer.step)
            if cfg.save_every and trainer.step % cfg.save_every == 0:
                run.checkpoint()
            if progress is not None:
                progress(trainer.step, cfg.steps, logs, preview)
    except BaseException:
        if not in_step:
            try:
                run.checkpoint(sync=False)  # the state after the last completed iteration (other ranks may be gone)
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        raise
    if interrupted or trainer.step >= cfg.steps:
        run.checkpoint()
    diff = run.check_ranks(log)
    curve = loss_curve(trainer.history, trainer.curve_keys)
    model, files, grid = run.finish(interrupted, preview, provenance, curve, log)
    tdist.barrier(run.world)
    return FitResult(model, list(trainer.history), curve, grid, run.paths.state if run.saved_step >= 0 else None,
                     trainer.step, interrupted, files, diff)
