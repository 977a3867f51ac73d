"""T-step LDDGAN sampling: posterior sampling with G's x0 prediction (DDGAN Alg. 1, sampling part).

x_T ~ N(0, I); for i = T-1 .. 0: z ~ N(0, I); x0 = G(x, i, z); x <- sample of q(x_{i-1} | x_i, x0).
Randomness comes in through a ``NoiseSource`` so that the loop is the same for explicit noises
(parity with the official code), per-sample seeds (batch-size- and device-independent), or both.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from ..errors import InputError
from .schedule import DiffusionCoefficients, posterior_sample, PosteriorCoefficients, q_sample


def torch_seed(seed) -> int:
    """`seed` as torch.manual_seed takes it: itself inside torch's range [-2^63, 2^64), else folded mod 2^64, so
    any integer seed (ComfyUI's go up to 2^64 - 1; seed + b and derived seeds go past it) gives a generator."""
    s = int(seed)
    return s if -(2 ** 63) <= s < 2 ** 64 else s % 2 ** 64


class NoiseSource:
    """Supplies x_T / per-step z and noise in the official draw order.

    Seeded: one CPU ``torch.Generator`` per sample, each drawing x_T[b], then per step z[b] and noise[b];
    sample b therefore depends only on its own seed (equal to the official code run with batch 1).
    Explicit: tensors given by the caller, ``step_z[s]`` / ``step_noise[s]`` used at loop step s.
    """

    def __init__(self, shape: Sequence[int], nz: int, seeds: Sequence[int] | None = None,
                 x_T=None, step_z=None, step_noise=None):
        self.shape, self.nz = tuple(shape), nz
        self.gens = None if seeds is None else [torch.Generator().manual_seed(torch_seed(s)) for s in seeds]
        self.x_T, self.step_z, self.step_noise = x_T, step_z, step_noise
        if self.gens is None and (x_T is None or step_z is None or step_noise is None):
            raise InputError("sample: give seeds (or seed), or all of x_T, step_z and step_noise")

    def _draw(self, *shape):
        return torch.stack([torch.randn(*shape, generator=g) for g in self.gens])

    def initial(self):
        return self.x_T if self.x_T is not None else self._draw(*self.shape[1:])

    def z(self, s: int):
        return self.step_z[s] if self.step_z is not None else self._draw(self.nz)

    def noise(self, s: int):
        return self.step_noise[s] if self.step_noise is not None else self._draw(*self.shape[1:])


def posterior_loop(generator: Callable, post: PosteriorCoefficients, x: torch.Tensor, start: int,
                   noise: NoiseSource, callback: Callable | None = None, *, precompute: bool = False,
                   embedder=None):
    """Run steps i = start-1 .. 0 from x (= x_start in diffusion space). Returns (x, trajectory, x0s).

    ``callback(info)`` gets a dict with step (0-based loop step), total, t, x (after the step), x0.
    ``precompute``: the step tensors, the time embeddings (``embedder.embed_time``, handed to the generator
    as ``temb=``) and the posterior coefficients on x's device, all made before the loop. Each embedding is
    computed on the same [B] batch the generator would use, so the results are bit-identical.
    """
    device, B = x.device, x.shape[0]
    steps = list(reversed(range(start)))
    ts = {i: torch.full((B,), i, dtype=torch.int64, device=device) for i in steps}
    tembs = {}
    if precompute:
        post = dataclasses.replace(post, **{f.name: getattr(post, f.name).to(device)
                                            for f in dataclasses.fields(post)})
        if embedder is not None:
            tembs = {i: embedder.embed_time(ts[i]) for i in steps}  # [B, 4nf] each
    traj, x0s = [x], []
    for s, i in enumerate(steps):
        t = ts[i]
        z = noise.z(s).to(device=device, dtype=torch.float32)
        x0 = (generator(x, t, z, temb=tembs[i]) if i in tembs else generator(x, t, z)).float()
        eps = noise.noise(s).to(device=device, dtype=torch.float32)
        x = posterior_sample(post, x0, x, t, eps)
        traj.append(x)
        x0s.append(x0)
        if callback is not None:
            callback({"step": s, "total": start, "t": i, "x": x, "x0": x0})
    return x, traj, x0s


def start_step_for(denoise: float, T: int) -> int:
    """Number of steps to run for a denoise strength in [0, 1]: 0 -> 0 (return the input), 1 -> T."""
    if not 0.0 <= float(denoise) <= 1.0:
        raise InputError(f"denoise must be in [0, 1], got {denoise}")
    if denoise == 0:
        return 0
    return min(T, max(1, round(float(denoise) * T)))


def noised_start(coef: DiffusionCoefficients, x0: torch.Tensor, k: int, eps: torch.Tensor) -> torch.Tensor:
    """x_k ~ q(x_k | x_0) at grid point k (the input of loop step i = k-1)."""
    t = torch.full((x0.shape[0],), k, dtype=torch.int64)
    return q_sample(coef, x0, t, eps.to(x0))
