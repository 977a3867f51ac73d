"""The LDDGAN model object: generator + autoencoder + schedule, with encode / decode / sample / save."""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn as nn

from . import fast as fastpath
from .autoencoder import Autoencoder
from .config import ModelConfig
from .diffusion import DiffusionCoefficients, PosteriorCoefficients
from .errors import InputError
from .fast import FastOptions
from .generator import Generator
from .limits import check_finite_output, check_finite_schedule
from .sampling import NoiseSource, noised_start, posterior_loop, start_step_for


class LDDGAN(nn.Module):
    """A complete LDDGAN. Latents handed in and out (``encode``/``decode``/``sample``) live in the
    autoencoder's own, unscaled space; the generator works on latent / scale_factor.

    ``encode`` / ``decode`` / ``sample`` run the fast path described by ``self.fast`` (a
    ``lddgan_core.fast.FastOptions``; by default every piece that is exact in float32); ``set_fast(False)``
    selects the reference path.
    """

    def __init__(self, config: ModelConfig, fast: FastOptions | bool | str = True):
        super().__init__()
        self.config = config
        self.generator = Generator(config.generator)
        self.autoencoder = Autoencoder(config.autoencoder)
        # Plain tensors, not buffers: they are derived from the config and never saved.
        self.coefficients = DiffusionCoefficients.from_config(config.diffusion)
        self.posterior = PosteriorCoefficients.from_config(config.diffusion)
        check_finite_schedule(self.coefficients, self.posterior)
        self.set_fast(fast)

    # -- fast path ------------------------------------------------------------------------------------------
    def set_fast(self, options: FastOptions | bool | str = True) -> "LDDGAN":
        """Choose the inference path: a FastOptions, True (float32 fast path), False (reference) or a
        preset name ("ref", "fast", "bf16", "fp16", "max"). Returns self."""
        self.fast = FastOptions.coerce(options)
        fastpath.configure(self, self.fast, self.device)
        self._fast_cache = fastpath.CallableCache()  # compiled / graphed callables, rebuilt lazily
        self._decoder_half_failed = False
        return self

    def _apply(self, fn, *args, **kw):  # .to() / .cuda() / .half(): keep the memory format the options want
        out = super()._apply(fn, *args, **kw)
        if "fast" in self.__dict__:
            fastpath.configure(self, self.fast, self.device)
            self._fast_cache = fastpath.CallableCache()
        return out

    def _callable(self, name: str):
        """The generator / decoder as the options want it called (plain, compiled, CUDA-graphed)."""
        key = (name, self.device)
        if key not in self._fast_cache:
            fn = self.generator if name == "generator" else self.autoencoder.decode
            self._fast_cache[key] = fastpath.wrap(fn, self.fast, self.device)
        return self._fast_cache[key]

    # -- properties -------------------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return self.config.diffusion.num_timesteps

    @property
    def scale_factor(self) -> float:
        return float(self.config.scale_factor)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    @property
    def device(self) -> torch.device:
        return self.generator.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.generator.conv_in.weight.dtype

    # -- autoencoder --------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> autoencoder latent [B, C, H/f, W/f] (KL: posterior mean; VQ: pre-quantization)."""
        images = images.to(self.device) if torch.is_tensor(images) else images  # else: checked below
        with fastpath.runtime(self.fast, self.device):
            out = self.autoencoder.encode(images).float().contiguous()
        return fastpath.to_normal(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = None,
               tile_size: int | None = None) -> torch.Tensor:
        """Autoencoder latent [B, C, h, w] -> images [B, 3, h*f, w*f] in [-1, 1] (VQ quantizes first).

        Decodes ``chunk_size`` latents at a time (default: ``self.fast.decode_chunk``, "auto" sizes chunks
        from a memory budget) so that memory stays bounded for big batches; the result does not depend on it
        beyond float rounding. Images too big to decode at once within the budget are decoded in overlapping
        tiles (``self.fast.decode_tile``, or ``tile_size`` latent pixels), blended across the overlaps: an
        approximation of the whole-image decode, used only when needed.
        """
        latents = latents.to(self.device) if torch.is_tensor(latents) else latents  # else: checked below
        self.autoencoder.check_latents(latents)
        for name, v, lo in (("chunk_size", chunk_size, 1), ("tile_size", tile_size, fastpath.MIN_TILE)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise InputError(f"decode {name}: expected an integer >= {lo}, got {v!r}")
        plan_key = ("decode_plan", tuple(latents.shape), chunk_size, tile_size, self._decoder_half_failed)
        if plan_key in self._fast_cache:
            tile, n = self._fast_cache[plan_key]
        else:
            tile = fastpath.decode_tile_size(self, latents, self.fast, tile_size)
            n = fastpath.decode_chunk_size(self, latents, self.fast, chunk_size, tile)
            if self.fast.compile or self.fast.cuda_graphs:
                # compiled code and captured graphs are per shape: keep the shapes of one latent shape fixed
                # rather than re-sizing from the free memory every call (each new shape: a compile / a graph)
                self._fast_cache[plan_key] = (tile, n)
        f = self.autoencoder.cfg.downsample_factor
        with fastpath.runtime(self.fast, self.device):
            if tile is None:
                outs = [self._decode_chunk(chunk) for chunk in latents.split(n)]
            else:
                outs = [fastpath.decode_tiled(self._decode_chunk, chunk, tile, f) for chunk in latents.split(n)]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
        check_finite_output(out, "decode", "the latents or the autoencoder weights are not finite, or half precision "
                                           "overflowed (use fp32)")
        return fastpath.to_normal(out)

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        """[n, C, h, w] -> float32 [n, 3, H, W] in NCHW, in half precision where the options allow it."""
        with fastpath.runtime(self.fast, self.device, "decoder", half=not self._decoder_half_failed) as half:
            img = self._callable("decoder")(z)
            if half is not None and self.fast.decoder_fp32 == "auto" and not bool(torch.isfinite(img).all()):
                self._decoder_half_failed = True  # e.g. fp16 overflow: stay in float32 from now on
                fastpath.warn_decoder_fallback("LDDGAN.decode")
                with torch.autocast(self.device.type, enabled=False):
                    img = self.autoencoder.decode(z)
            return img.float().contiguous()

    # -- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, batch_size: int | None = None, seed: int | None = None, *, seeds: Sequence[int] | None = None,
               x_T: torch.Tensor | None = None, step_z=None, step_noise=None,
               init_latent: torch.Tensor | None = None, denoise: float = 1.0, start_step: int | None = None,
               latent_size: tuple[int, int] | None = None, callback: Callable | None = None,
               return_trajectory: bool = False):
        """T-step posterior sampling; returns the final latent times scale_factor (what ``decode`` takes).

        Randomness: ``seed`` (sample b uses seed + b) or ``seeds`` (one per sample), drawn on the CPU per
        sample so results do not depend on batch size or device; or explicit ``x_T`` [B, C, h, w],
        ``step_z`` [S, B, nz] and ``step_noise`` [S, B, C, h, w] in the official loop order.
        Image-to-image / variations: ``init_latent`` (autoencoder space) is noised with q(x_k | x_0) to
        grid point k = ``start_step`` (or round(denoise * T)) and the remaining k steps are run; with
        ``x_T`` given it is the noise used for that q-sample. denoise=1 ignores the input (pure noise),
        denoise=0 returns it unchanged.
        """
        T = self.num_timesteps
        C, h, w = self.latent_shape
        if latent_size is not None:
            h, w = int(latent_size[0]), int(latent_size[1])
        if init_latent is not None:
            self.autoencoder.check_latents(init_latent, "init_latent")
            B = init_latent.shape[0]
            h, w = init_latent.shape[2:]
        elif x_T is not None:
            B = x_T.shape[0]
        elif seeds is not None:
            B = len(seeds)
        elif batch_size is not None:
            B = int(batch_size)
        else:
            raise InputError("sample: give batch_size with seed, seeds, x_T, or init_latent")
        if B < 1:
            raise InputError(f"sample: batch size must be >= 1, got {B}")
        if batch_size is not None and int(batch_size) != B:
            raise InputError(f"sample: batch_size={batch_size} contradicts the batch of {B} given by "
                             f"{'init_latent' if init_latent is not None else 'x_T' if x_T is not None else 'seeds'}")
        if not 0.0 <= float(denoise) <= 1.0:
            raise InputError(f"sample: denoise must be in [0, 1], got {denoise}")
        if seeds is None and seed is not None:
            seeds = [int(seed) + b for b in range(B)]
        if seeds is not None and len(seeds) != B:
            raise InputError(f"sample: {len(seeds)} seeds given for a batch of {B}")
        if x_T is not None and tuple(x_T.shape) != (B, C, h, w):
            raise InputError(f"sample x_T: expected shape {(B, C, h, w)}, got {tuple(x_T.shape)}")

        k = T if start_step is None else int(start_step)
        if init_latent is not None and start_step is None:
            k = start_step_for(denoise, T)
        if not 0 <= k <= T:
            raise InputError(f"sample: start_step must be in 0..{T}, got {k}")
        if step_z is not None and (len(step_z) < k or tuple(step_z[0].shape) != (B, self.config.generator.nz)):
            raise InputError(f"sample step_z: expected [{k}, {B}, {self.config.generator.nz}], got "
                             f"{[len(step_z)] + list(step_z[0].shape) if len(step_z) else []}")
        if step_noise is not None and (len(step_noise) < k or tuple(step_noise[0].shape) != (B, C, h, w)):
            raise InputError(f"sample step_noise: expected [{k}, {B}, {C}, {h}, {w}]")

        src = NoiseSource((B, C, h, w), self.config.generator.nz, seeds, x_T, step_z, step_noise)
        sf, dev = self.scale_factor, self.device
        if init_latent is not None and k < T:
            if k == 0:
                out = init_latent.float().clone()
                return (out, [out / sf], []) if return_trajectory else out
            x = noised_start(self.coefficients, init_latent.float().cpu() / sf, k, src.initial().float())
        else:
            x = src.initial().float()
        was_training = self.training
        self.eval()
        try:
            with fastpath.runtime(self.fast, dev, "generator", vq=self.config.autoencoder.kind == "vq"):
                x, traj, x0s = posterior_loop(self._callable("generator"), self.posterior, x.to(dev), k, src, callback,
                                              precompute=self.fast.precompute, embedder=self.generator)
                out = (x * sf).contiguous()
        finally:
            self.train(was_training)
        check_finite_output(out, "sample", "non-finite weights, inputs or schedule, or half precision overflowed "
                                           "(use fp32)")
        out, traj, x0s = fastpath.to_normal(out), fastpath.to_normal(traj), fastpath.to_normal(x0s)
        return (out, traj, x0s) if return_trajectory else out

    @torch.no_grad()
    def generate(self, batch_size: int | None = None, seed: int = 0, **kw) -> torch.Tensor:
        """Sample and decode: images [B, 3, H, W] in [-1, 1] (one image unless seeds / x_T / init_latent
        set the batch)."""
        if batch_size is None and all(kw.get(k) is None for k in ("seeds", "x_T", "init_latent")):
            batch_size = 1
        return self.decode(self.sample(batch_size, seed, **kw)).clamp(-1, 1)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> str:
        """Write our one-file format (see ``lddgan_core.io``) atomically; returns the path."""
        from .io import save_model
        return save_model(self, path, dtype=dtype)
