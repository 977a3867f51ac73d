"""The LDDGAN model object: generator + autoencoder + schedule, with encode / decode / sample / save."""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .config import ModelConfig
from .diffusion.sampler import NoiseSource, noised_start, sample_loop, seeds_for_batch, start_step_for
from .diffusion.schedule import DiffusionCoefficients, PosteriorCoefficients
from .errors import CheckpointError, ConfigError, InputError
from .fast.compiled import CallableCache, wrap
from .fast.context import channels_last_for, clone_inference_tensors, runtime
from .fast.decode import DecodePlan, decode_tiled, plan_decode, warn_decoder_fallback
from .fast.options import MIN_TILE, FastOptions
from .formats.lddgan_file import key_mismatch, parse_dtype, read_checked_model_file, save_model
from .limits import check_finite_output, check_finite_schedule, check_latent
from .nets.autoencoder import Autoencoder
from .nets.generator import Generator


class LDDGAN(nn.Module):
    """A complete LDDGAN. Latents handed in and out (``encode``/``decode``/``sample``) live in the
    autoencoder's own, unscaled space; the generator works on latent / scale_factor.

    ``encode`` / ``decode`` / ``sample`` run the fast path described by ``self.fast`` (a
    ``lddgan_core.FastOptions``; by default every piece that is exact in float32); ``set_fast(False)``
    selects the reference path. The networks are built with the op forms the options choose
    (``FastOptions.net_impl``); ``set_fast`` rebuilds that choice explicitly.
    """

    def __init__(self, config: ModelConfig, fast: FastOptions | bool | str = True):
        super().__init__()
        self.config = config
        self.fast = FastOptions.coerce(fast)
        self.generator = Generator(config.generator, self.fast.net_impl())
        self.autoencoder = Autoencoder(config.autoencoder, self.fast.net_impl())
        # Plain tensors, not buffers: they are derived from the config and never saved.
        self.coefficients = DiffusionCoefficients.from_config(config.diffusion)
        self.posterior = PosteriorCoefficients.from_config(config.diffusion)
        check_finite_schedule(self.coefficients, self.posterior)
        self.set_fast(self.fast)

    # -- fast path ------------------------------------------------------------------------------------------
    def set_fast(self, options: FastOptions | bool | str = True) -> "LDDGAN":
        """Choose the inference path: a FastOptions, True (float32 fast path), False (reference) or a
        preset name ("ref", "fast", "bf16", "fp16", "max"). Returns self."""
        self.fast = FastOptions.coerce(options)
        self.generator.set_impl(self.fast.net_impl())
        self.autoencoder.set_impl(self.fast.net_impl())
        self._layout_device = None
        self._match_layout()
        self._fast_cache = CallableCache()  # compiled / graphed callables and fixed decode plans, made lazily
        # True once a half-precision decode gave non-finite values: decodes run in float32 from then on
        self.decoder_fp32_fallback = False
        return self

    def _match_layout(self) -> None:
        """Memory formats as the options want them on the device the weights are on now (channels_last
        depends on the device), re-applied only after a move. Compiled callables are kept: they are per device."""
        dev = self.device
        if self._layout_device == dev:
            return
        for net, part in ((self.generator, "generator"), (self.autoencoder, "autoencoder")):
            on = channels_last_for(part, self.fast, dev)
            net.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        self._layout_device = dev

    def _wrapped(self, part: str):
        """The generator / decoder wrapped as the options say (plain, compiled, CUDA-graphed), per device."""
        key = (part, self.device)
        if key not in self._fast_cache:
            fn = self.generator if part == "generator" else self.autoencoder.decode
            self._fast_cache[key] = wrap(fn, self.fast, self.device)
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
        self._match_layout()
        with runtime(self.fast, self.device):
            out = self.autoencoder.encode(images).float().contiguous()
        return clone_inference_tensors(out)

    def plan_decode(self, latent_shape, *, budget: float | None = None, chunk_size: int | None = None,
                    tile_size: int | None = None) -> DecodePlan:
        """How latents of ``latent_shape`` [B, C, h, w] are decoded on this model's device: tile and chunk sizes
        within ``budget`` bytes (default: 2 GiB on CPU, half the free GPU memory), from ``self.fast``
        (``decode_chunk`` / ``decode_tile``) unless ``chunk_size`` / ``tile_size`` say otherwise."""
        for name, v, lo in (("chunk_size", chunk_size, 1), ("tile_size", tile_size, MIN_TILE)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise InputError(f"decode {name}: expected an integer >= {lo}, got {v!r}")
        return plan_decode(self.autoencoder.cfg, tuple(latent_shape), self.fast, self.device, budget=budget,
                           fp32_fallback=self.decoder_fp32_fallback, chunk_size=chunk_size, tile_size=tile_size)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = None, tile_size: int | None = None, *,
               plan: DecodePlan | None = None) -> torch.Tensor:
        """Autoencoder latent [B, C, h, w] -> images [B, 3, h*f, w*f] in [-1, 1] (VQ quantizes first).

        Runs ``plan`` (from ``plan_decode``; the ComfyUI nodes make theirs from the free memory), or makes one:
        ``chunk_size`` latents at a time (default ``self.fast.decode_chunk``: "auto" sizes chunks from a memory
        budget) so that memory stays bounded for big batches; the result does not depend on it beyond float
        rounding. Images too big to decode at once within the budget are decoded in overlapping tiles
        (``self.fast.decode_tile``, or ``tile_size`` latent pixels), blended across the overlaps: an
        approximation of the whole-image decode, used only when needed.
        """
        latents = latents.to(self.device) if torch.is_tensor(latents) else latents  # else: checked below
        check_latent(latents, self.latent_shape, "latents")
        if plan is None:
            plan = self._decode_plan(tuple(latents.shape), chunk_size, tile_size)
        elif chunk_size is not None or tile_size is not None:
            raise InputError("decode: give a plan or chunk_size / tile_size, not both")
        self._match_layout()
        f = self.autoencoder.cfg.downsample_factor
        with runtime(self.fast, self.device):
            if plan.tile is None:
                outs = [self._decode_chunk(chunk) for chunk in latents.split(plan.chunk)]
            else:
                outs = [decode_tiled(self._decode_chunk, chunk, plan.tile, f) for chunk in latents.split(plan.chunk)]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
        check_finite_output(out, "decode", "the latents or the autoencoder weights are not finite, or half precision "
                                           "overflowed (use fp32)")
        return clone_inference_tensors(out)

    def _decode_plan(self, shape: tuple, chunk_size: int | None, tile_size: int | None) -> DecodePlan:
        key = ("decode_plan", shape, chunk_size, tile_size, self.decoder_fp32_fallback)
        if key in self._fast_cache:
            return self._fast_cache[key]
        plan = self.plan_decode(shape, chunk_size=chunk_size, tile_size=tile_size)
        if self.fast.compile or self.fast.cuda_graphs:
            # compiled code and captured graphs are per shape: keep the shapes of one latent shape fixed
            # rather than re-sizing from the free memory every call (each new shape: a compile / a graph)
            self._fast_cache[key] = plan
        return plan

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        """[n, C, h, w] -> float32 [n, 3, H, W] in NCHW, in half precision where the options allow it."""
        with runtime(self.fast, self.device, "decoder", half=not self.decoder_fp32_fallback) as half:
            img = self._wrapped("decoder")(z)
            if half is not None and self.fast.decoder_fp32 == "auto" and not bool(torch.isfinite(img).all()):
                self.decoder_fp32_fallback = True  # e.g. fp16 overflow: stay in float32 from now on
                warn_decoder_fallback("LDDGAN.decode")
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

        A thin layer over ``diffusion.sampler``: it works out the batch shape and the start step, builds the
        ``NoiseSource`` (which checks the randomness) and runs ``run_sampler``.
        """
        C, h, w = self.latent_shape
        if latent_size is not None:
            h, w = int(latent_size[0]), int(latent_size[1])
        if init_latent is not None:
            check_latent(init_latent, self.latent_shape, "init_latent", multiple=self.config.generator.size_multiple)
            h, w = init_latent.shape[2:]
        B = self._batch_size(batch_size, seeds, x_T, init_latent)
        k = self._start_step(init_latent, denoise, start_step)
        if seeds is None and seed is not None:
            seeds = seeds_for_batch(seed, B)
        noise = NoiseSource((B, C, h, w), self.config.generator.nz, k, seeds, x_T, step_z, step_noise)
        sf = self.scale_factor
        if init_latent is not None and k < self.num_timesteps:
            if k == 0:
                out = init_latent.float().clone()
                return (out, [out / sf], []) if return_trajectory else out
            x = noised_start(self.coefficients, init_latent.float().cpu() / sf, k, noise.initial().float())
        else:
            x = noise.initial().float()
        out, traj, x0s = self.run_sampler(x, noise, k, callback)
        return (out, traj, x0s) if return_trajectory else out

    @staticmethod
    def _batch_size(batch_size, seeds, x_T, init_latent) -> int:
        """The batch size, from init_latent, x_T, seeds or batch_size (in that order); they must agree."""
        if init_latent is not None:
            B = init_latent.shape[0]
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
        return B

    def _start_step(self, init_latent, denoise: float, start_step: int | None) -> int:
        """Steps to run: ``start_step``, else round(denoise * T) with an init latent, else T."""
        T = self.num_timesteps
        if not 0.0 <= float(denoise) <= 1.0:
            raise InputError(f"sample: denoise must be in [0, 1], got {denoise}")
        k = T if start_step is None else int(start_step)
        if init_latent is not None and start_step is None:
            k = start_step_for(denoise, T)
        if not 0 <= k <= T:
            raise InputError(f"sample: start_step must be in 0..{T}, got {k}")
        return k

    @torch.no_grad()
    def run_sampler(self, x: torch.Tensor, noise: NoiseSource, start: int, callback: Callable | None = None):
        """``sample_loop`` from x (diffusion space, [B, C, h, w]) for ``start`` steps on this model's device, on
        the fast path: the generator wrapped as the options say, under their precision and grad mode, the
        posterior coefficients moved to the device once (``precompute``). Returns (final latent times
        scale_factor, trajectory, x0 predictions)."""
        was_training = self.training
        self.eval()
        try:
            self._match_layout()
            dev = self.device
            schedule = self.posterior.to(dev) if self.fast.precompute else self.posterior
            with runtime(self.fast, dev, "generator", vq=self.config.autoencoder.kind == "vq"):
                x, traj, x0s = sample_loop(self._wrapped("generator"), schedule, x.to(dev), noise, start, callback)
                out = (x * self.scale_factor).contiguous()
        finally:
            self.train(was_training)
        check_finite_output(out, "sample", "non-finite weights, inputs or schedule, or half precision overflowed "
                                           "(use fp32)")
        return clone_inference_tensors(out), clone_inference_tensors(traj), clone_inference_tensors(x0s)

    @torch.no_grad()
    def generate(self, batch_size: int | None = None, seed: int = 0, **kw) -> torch.Tensor:
        """Sample and decode: images [B, 3, H, W] in [-1, 1] (one image unless seeds / x_T / init_latent
        set the batch)."""
        if batch_size is None and all(kw.get(k) is None for k in ("seeds", "x_T", "init_latent")):
            batch_size = 1
        return self.decode(self.sample(batch_size, seed, **kw)).clamp(-1, 1)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> str:
        """Write our one-file format (see ``lddgan_core.formats.lddgan_file``) atomically; returns the path."""
        return save_model(self, path, dtype=dtype)


def load_model(path, device="cpu", dtype=torch.float32):
    """Load our format: a file, or a shipped model's short name ("shapes", "emoji", "fixture"). dtype=None keeps
    the stored precision; otherwise weights are cast."""
    p = os.fspath(path)
    from .hub.shipped import SHIPPED_MODELS

    if p in SHIPPED_MODELS and not os.path.exists(p):
        p = SHIPPED_MODELS[p]
    # before building anything: the config's sizes must be the weights' sizes, and the weights finite
    cfg, meta, tensors = read_checked_model_file(p)
    try:
        model = LDDGAN(cfg)
    except ConfigError as e:  # e.g. a degenerate schedule
        raise CheckpointError(f"model file {p!r}: {e}") from None
    dtype = parse_dtype(dtype)
    for prefix, module in (("generator.", model.generator), ("autoencoder.", model.autoencoder)):
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected, shapes = key_mismatch(module.state_dict(), sd)
        if missing or unexpected or shapes:
            raise CheckpointError(f"model file {p!r}: {prefix[:-1]} weights do not match its config: "
                                  f"missing {missing[:20]}, unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}")
        module.load_state_dict(sd, strict=True)
    stray = sorted(k for k in tensors if not k.startswith(("generator.", "autoencoder.")))
    if stray:
        raise CheckpointError(f"model file {p!r}: unexpected tensors {stray[:20]}")
    stored = next(iter(tensors.values())).dtype if tensors else torch.float32
    model = model.to(device=device, dtype=dtype or stored)
    return model.eval()
