"""T-step LDDGAN sampling: posterior sampling with G's x0 prediction (DDGAN Alg. 1, sampling part).

x_T ~ N(0, I); for i = T-1 .. 0: z ~ N(0, I); x0 = G(x, i, z); x <- sample of q(x_{i-1} | x_i, x0).
The loop (``sample_loop``) has one signature, k-diffusion style: (generator, schedule, initial latent, noise
source, start step, callback); it knows nothing of devices, precision or the fast path. Randomness comes in
through a ``NoiseSource`` (which owns every check of it), so the loop is the same for explicit noises (parity
with the official code), per-sample seeds (batch-size- and device-independent), or both.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import InputError
from .schedule import DiffusionCoefficients, posterior_sample, PosteriorCoefficients, q_sample


MAX_SEED = 2 ** 64 - 1  # the largest seed a caller gives (ComfyUI's seed widgets go this far); derived seeds
# (seed + b, seed * k + step) go past it and are folded by torch_seed


def torch_seed(seed) -> int:
    """`seed` as torch.manual_seed takes it: itself inside torch's range [-2^63, 2^64), else folded mod 2^64, so
    any integer seed (ComfyUI's go up to 2^64 - 1; seed + b and derived seeds go past it) gives a generator."""
    s = int(seed)
    return s if -(2 ** 63) <= s < 2 ** 64 else s % 2 ** 64


def seeds_for_batch(seed, batch: int, indices: Sequence[int] | None = None, name: str = "indices") -> list[int]:
    """Per-sample seeds seed + i for i in ``indices`` (default 0..batch-1; one per sample, else an InputError
    naming ``name``), each folded into torch's range (``torch_seed``): the one place a batch's seeds are made, for
    the library and the ComfyUI sampler alike."""
    idx = range(batch) if indices is None else [int(i) for i in indices]
    if len(idx) != batch:
        raise InputError(f"{name} has {len(idx)} entries for a batch of {batch}")
    return [torch_seed(int(seed) + i) for i in idx]


class NoiseSource:
    """Supplies x_T / per-step z and noise in the official draw order, and checks them.

    Seeded: one CPU ``torch.Generator`` per sample, each drawing x_T[b], then per step z[b] and noise[b];
    sample b therefore depends only on its own seed (equal to the official code run with batch 1).
    Explicit: tensors given by the caller, ``step_z[s]`` / ``step_noise[s]`` used at loop step s. Both may be
    mixed (e.g. an explicit x_T with seeded steps); whatever is not given explicitly comes from the seeds.

    ``shape`` is the batch's latent shape [B, C, h, w], ``nz`` the generator's z size, ``steps`` the number of
    loop steps the source must supply.
    """

    def __init__(self, shape: Sequence[int], nz: int, steps: int, seeds: Sequence[int] | None = None,
                 x_T=None, step_z=None, step_noise=None):
        B, C, h, w = shape = tuple(int(v) for v in shape)
        if seeds is not None and len(seeds) != B:
            raise InputError(f"sample: {len(seeds)} seeds given for a batch of {B}")
        if x_T is not None and tuple(x_T.shape) != shape:
            raise InputError(f"sample x_T: expected shape {shape}, got {tuple(x_T.shape)}")
        if step_z is not None and (len(step_z) < steps or tuple(step_z[0].shape) != (B, nz)):
            raise InputError(f"sample step_z: expected [{steps}, {B}, {nz}], got "
                             f"{[len(step_z)] + list(step_z[0].shape) if len(step_z) else []}")
        if step_noise is not None and (len(step_noise) < steps or tuple(step_noise[0].shape) != shape):
            raise InputError(f"sample step_noise: expected [{steps}, {B}, {C}, {h}, {w}]")
        if seeds is None and (x_T is None or step_z is None or step_noise is None):
            raise InputError("sample: give seeds (or seed), or all of x_T, step_z and step_noise")
        self.shape, self.nz, self.steps = shape, nz, steps
        self.gens = None if seeds is None else [torch.Generator().manual_seed(torch_seed(s)) for s in seeds]
        self.x_T, self.step_z, self.step_noise = x_T, step_z, step_noise

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], latent_shape: Sequence[int], nz: int, steps: int) -> "NoiseSource":
        """One seed per sample; ``latent_shape`` is [C, h, w]."""
        return cls((len(seeds), *latent_shape), nz, steps, seeds=seeds)

    @classmethod
    def explicit(cls, x_T: torch.Tensor, step_z, step_noise) -> "NoiseSource":
        """x_T [B, C, h, w], step_z [S, B, nz], step_noise [S, B, C, h, w]: S steps, in the official order."""
        return cls(x_T.shape, step_z[0].shape[-1], len(step_z), x_T=x_T, step_z=step_z, step_noise=step_noise)

    def _draw(self, *shape):
        return torch.stack([torch.randn(*shape, generator=g) for g in self.gens])

    def initial(self):
        return self.x_T if self.x_T is not None else self._draw(*self.shape[1:])

    def z(self, s: int):
        return self.step_z[s] if self.step_z is not None else self._draw(self.nz)

    def noise(self, s: int):
        return self.step_noise[s] if self.step_noise is not None else self._draw(*self.shape[1:])


def sample_loop(generator: Callable, schedule: PosteriorCoefficients, x: torch.Tensor, noise: NoiseSource,
                start: int, callback: Callable | None = None):
    """DDGAN's sampler: steps i = start-1 .. 0 from x (= x_start in diffusion space); at each step
    x0 = G(x, i, z) and x <- a sample of q(x_{i-1} | x_i, x0). Returns (x, trajectory, x0s).

    ``generator(x, t, z)``: t int64 [B]; ``schedule``: the posterior coefficients (on any device);
    ``callback(info)`` gets a dict with step (0-based loop step), total, t, x (after the step), x0.
    """
    device, B = x.device, x.shape[0]
    steps = list(reversed(range(start)))
    ts = {i: torch.full((B,), i, dtype=torch.int64, device=device) for i in steps}
    traj, x0s = [x], []
    for s, i in enumerate(steps):
        t = ts[i]
        z = noise.z(s).to(device=device, dtype=torch.float32)
        x0 = generator(x, t, z).float()
        eps = noise.noise(s).to(device=device, dtype=torch.float32)
        x = posterior_sample(schedule, x0, x, t, eps)
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
