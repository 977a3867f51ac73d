"""Training schedules as pure functions of the training progress p in [0, 1].

Weighted Learning (LDDGAN, Trinh & Hamagami 2024, Sec. 3.3): the generator loss is
L_adv + w(p) * L1(x0_pred, x0), where the reconstruction weight w decays from ~1 to ~0 over training so
that the reconstruction term guides the early phase and the adversarial term the late phase.
"""
from __future__ import annotations

import math

from ..errors import ConfigError

REC_SCHEDULES = ("sigmoid", "constant", "off", "linear", "cosine")
LR_SCHEDULES = ("constant", "cosine")


def _check_progress(progress: float) -> float:
    p = float(progress)
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise ConfigError(f"progress must be in [0, 1], got {progress!r}")
    return p


def rec_weight(progress: float, schedule: str = "sigmoid", gamma: float = 6.0, value: float = 1.0) -> float:
    """Weight w of the L1 reconstruction term at training progress p in [0, 1].

    * "sigmoid" (the paper's): w = 1 - sigmoid(-gamma + 2 gamma p), i.e. the official
      ``1 - 1/(1 + exp(-linspace(-gamma, gamma, N+1)))[epoch]`` with p = epoch / N.
      w(0) = sigmoid(gamma) (0.9975 for gamma 6), w(1/2) = 1/2, w(1) = sigmoid(-gamma).
    * "constant": w = value (the paper's "+rec" ablation with value 1).
    * "off": w = 0 (adversarial loss only).
    * "linear": w = value (1 - p).   "cosine": w = value (1 + cos(pi p)) / 2.
    """
    p = _check_progress(progress)
    if schedule == "sigmoid":
        if not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ConfigError(f"rec_weight: gamma must be a positive number, got {gamma!r}")
        s = -gamma + 2.0 * gamma * p
        # 1 - sigmoid(s) = sigmoid(-s), written to stay exact for large |s|
        return 1.0 / (1.0 + math.exp(s)) if s < 0 else math.exp(-s) / (1.0 + math.exp(-s))
    if schedule == "constant":
        return float(value)
    if schedule == "off":
        return 0.0
    if schedule == "linear":
        return float(value) * (1.0 - p)
    if schedule == "cosine":
        return float(value) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ConfigError(f"rec_weight: schedule must be one of {list(REC_SCHEDULES)}, got {schedule!r}")


def lr_at(progress: float, base_lr: float, schedule: str = "constant", min_lr: float = 1e-5) -> float:
    """Learning rate at progress p. "cosine": min_lr + (base_lr - min_lr)(1 + cos(pi p))/2, the closed form
    of the official CosineAnnealingLR(T_max=N, eta_min=1e-5) (min_lr is capped at base_lr)."""
    p = _check_progress(progress)
    if schedule == "constant":
        return float(base_lr)
    if schedule == "cosine":
        lo = min(float(min_lr), float(base_lr))
        return lo + (float(base_lr) - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ConfigError(f"lr schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")


def progress_of(step: int, total_steps: int) -> float:
    """Progress of the iteration with 0-based index `step` out of `total_steps`: step / (total - 1), so the
    first iteration sees p = 0 and the last p = 1, as the official epochs 0..N see linspace(-g, g, N+1)."""
    if total_steps <= 1:
        return 0.0
    return min(1.0, max(0.0, step / (total_steps - 1)))
