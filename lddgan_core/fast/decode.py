"""The fast inference path: one switch per optimisation, each checked against the reference path.

    m.set_fast(True)                         # FastOptions(): every piece that is exact in float32 (default)
    m.set_fast(False)                        # the reference path (the code the parity tests pin down)
    m.set_fast(FastOptions(sdpa=False))      # any single piece off
    m.set_fast("bf16")                       # + bfloat16 autocast (GPU, or a CPU with AMX / AVX512-BF16)

Pieces (fields of ``FastOptions``):

* ``fir``: the generator's FIR resampling as strided / transposed depthwise convolutions instead of zero
  insertion + padding + filtering (``ops.fir_*_conv``).
* ``sdpa``: ``F.scaled_dot_product_attention`` in the generator's and the autoencoder's attention blocks.
* ``upsample_conv``: the decoder's nearest-2x upsampling + 3x3 conv as one stride-2 transposed conv with a
  4x4 kernel (4/9 of the MACs of the largest decoder convs; ``ops.upsample_conv2x``).
* ``inplace``: SiLU and residual adds of the autoencoder's ResNet blocks reuse memory; the generator's blocks
  fuse each AdaGN into one multiply-add and do SiLU, bias and residual ops in place (no-grad, eval mode only).
* ``channels_last``: NHWC memory format (None: the autoencoder always; the generator on CUDA only, where
  NHWC is the layout tensor-core convolutions want; on CPU its small feature maps gained nothing).
* ``precompute``: step tensors, time embeddings and posterior coefficients on the device made once before
  the sampling loop (bit-identical values).
* ``inference_mode``: run under ``torch.inference_mode`` (outputs are cloned into normal tensors).
* ``autocast`` ("bf16" / "fp16" / None) with ``decoder_fp32`` (True: decoder stays float32; False: half;
  "auto": half, redone in float32 when it produces non-finite values) and ``generator_fp32`` (True: the
  generator stays float32; "auto": float32 for VQ models only, whose codebook snap turns the bf16 generator's
  small latent errors into different codes: bench, celeba256 e2e).
* ``cudnn_benchmark``, ``compile`` (True or a torch.compile backend name), ``cuda_graphs`` (CUDA only: one
  captured graph per input shape for the generator and the decoder).
* ``decode_chunk``: decode at most this many latents at once ("auto": sized from a memory budget, None: all).
* ``decode_tile``: decode images in overlapping tiles of this many latent pixels ("auto": only images whose
  decode alone is over the memory budget, None: never). Approximate (see ``decode_tiled``), so "auto" leaves
  every image that fits the budget untouched.

The float32 pieces agree with the reference to rounding (tests/test_fast*.py: <= 1e-5 per op, <= 1e-4 on
images); half precision is reported as max abs error and PSNR against float32 by ``lddgan_core.bench``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from ..nets import autoencoder as ae_mod, generator as g_mod

_AUTOCAST = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass(frozen=True)
class FastOptions:
    fir: bool = True  # FIR up/down-sampling as strided / transposed depthwise convs
    sdpa: bool = True  # scaled_dot_product_attention in both networks
    upsample_conv: bool = True  # decoder: nearest-2x + 3x3 conv as one 4x4 stride-2 transposed conv
    inplace: bool = True  # ResNet blocks of both networks: fused / in-place ops when no grad is recorded
    channels_last: bool | None = None  # None: autoencoder always, generator on CUDA only
    precompute: bool = True  # step tensors, time embeddings, posterior coefficients on device: once per run
    inference_mode: bool = True  # torch.inference_mode instead of no_grad (outputs cloned to normal tensors)
    autocast: str | None = None  # None, "bf16" or "fp16": half-precision autocast of generator and decoder
    decoder_fp32: bool | str = "auto"  # under autocast: True keep the decoder fp32; "auto": fp32 redo on NaN/inf
    generator_fp32: bool | str = "auto"  # under autocast: True keep the generator fp32; "auto": fp32 for VQ models
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick the fastest algorithms for fixed shapes
    compile: bool | str = False  # torch.compile generator and decoder (True: inductor, or a backend name)
    cuda_graphs: bool = False  # CUDA: capture generator / decoder once per input shape and replay
    decode_chunk: int | str | None = "auto"  # latents decoded at once: int, "auto" (memory budget) or None (all)
    decode_tile: int | str | None = "auto"  # latent px per square tile: int, "auto" (only when one image is over
    # the memory budget) or None (never). Tiles overlap by a quarter and are blended: an approximation

    def __post_init__(self):
        if self.autocast is not None and self.autocast not in _AUTOCAST:
            raise ConfigError(f"FastOptions.autocast must be None, 'bf16' or 'fp16', got {self.autocast!r}")
        for name in ("decoder_fp32", "generator_fp32"):
            if getattr(self, name) not in (True, False, "auto"):
                raise ConfigError(f"FastOptions.{name} must be True, False or 'auto', got {getattr(self, name)!r}")
        dc = self.decode_chunk
        if not (dc is None or dc == "auto" or (isinstance(dc, int) and not isinstance(dc, bool) and dc >= 1)):
            raise ConfigError(f"FastOptions.decode_chunk must be a positive int, 'auto' or None, got {dc!r}")
        dt = self.decode_tile
        if not (dt is None or dt == "auto" or (isinstance(dt, int) and not isinstance(dt, bool) and dt >= MIN_TILE)):
            raise ConfigError(f"FastOptions.decode_tile must be an int >= {MIN_TILE} (latent pixels), 'auto' or "
                              f"None, got {dt!r}")
        if not isinstance(self.compile, (bool, str)):
            raise ConfigError(f"FastOptions.compile must be a bool or a torch.compile backend name, "
                              f"got {self.compile!r}")

    @classmethod
    def reference(cls) -> "FastOptions":
        """Every piece off: exactly the reference path."""
        return cls(fir=False, sdpa=False, upsample_conv=False, inplace=False, channels_last=False, precompute=False,
                   inference_mode=False, autocast=None, cudnn_benchmark=False, compile=False, cuda_graphs=False,
                   decode_chunk=None, decode_tile=None)

    @classmethod
    def preset(cls, name: str) -> "FastOptions":
        """"ref" | "fast" (float32 pieces) | "bf16" | "fp16" (+ autocast) | "max" (bf16 + compile + CUDA graphs)."""
        presets = {"ref": cls.reference(), "reference": cls.reference(), "fast": cls(), "fp32": cls(),
                   "bf16": cls(autocast="bf16"), "fp16": cls(autocast="fp16"),
                   "max": cls(autocast="bf16", compile=True, cuda_graphs=True)}
        if name not in presets:
            raise ConfigError(f"unknown fast preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    @classmethod
    def coerce(cls, value) -> "FastOptions":
        """FastOptions, True (default), False / None (reference) or a preset name."""
        if isinstance(value, cls):
            return value
        if value is True:
            return cls()
        if value is False or value is None:
            return cls.reference()
        if isinstance(value, str):
            return cls.preset(value)
        raise ConfigError(f"fast options: expected FastOptions, a bool or a preset name, got {value!r}")

    def replace(self, **kw) -> "FastOptions":
        return dataclasses.replace(self, **kw)


# -- module configuration --------------------------------------------------------------------------------
def configure(model, opts: FastOptions, device: torch.device | None = None) -> None:
    """Set the implementation switches of every submodule of an LDDGAN (or a bare Generator / Autoencoder)
    and its memory format. Reference settings restore the reference path exactly (NCHW weights)."""

    for m in model.modules():
        if isinstance(m, (g_mod.ResBlock, g_mod.PyramidDown)):
            m.fir_impl = "conv" if opts.fir else "ref"
        elif isinstance(m, (g_mod.AttnBlock, ae_mod.AttnBlock)):
            m.attn_impl = "sdpa" if opts.sdpa else "ref"
        elif isinstance(m, ae_mod.Upsample):
            m.impl = "conv" if opts.upsample_conv else "ref"
        if isinstance(m, (ae_mod.ResnetBlock, g_mod.ResBlock)):
            m.inplace = bool(opts.inplace)
    gen, ae = getattr(model, "generator", None), getattr(model, "autoencoder", None)
    if gen is None and ae is None:  # a bare network
        gen, ae = (model, None) if isinstance(model, g_mod.Generator) else (None, model)
    dev = device if device is not None else next(model.parameters()).device
    for net, part in ((gen, "generator"), (ae, "autoencoder")):
        if net is not None:
            on = channels_last_for(part, opts, dev)
            net.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def channels_last_for(part: str, opts: FastOptions, device: torch.device) -> bool:
    if opts.channels_last is not None:
        return bool(opts.channels_last)
    # NHWC: faster for the decoder's large maps on CPU (oneDNN; bench: decode rows) and the layout CUDA
    # tensor-core convolutions want; the generator's small maps gained nothing on CPU
    return part == "autoencoder" or torch.device(device).type == "cuda"


# -- run-time context ---------------------------------------------------------------------------------------
def autocast_dtype(opts: FastOptions, part: str, device: torch.device, vq: bool = False) -> torch.dtype | None:
    """Half dtype used for `part` ("generator" / "decoder") of a KL (or `vq`) model, or None for float32."""
    if opts.autocast is None or (part == "decoder" and opts.decoder_fp32 is True) or (
            part == "generator" and (opts.generator_fp32 is True or (opts.generator_fp32 == "auto" and vq))):
        return None
    dt = _AUTOCAST[opts.autocast]
    if torch.device(device).type == "cpu" and dt == torch.float16:
        return None  # CPU float16 autocast is not used: oneDNN has no fast float16 convolutions on most CPUs
    return dt


@contextlib.contextmanager
def runtime(opts: FastOptions, device: torch.device, part: str | None = None, half: bool = True, vq: bool = False):
    """Grad mode + autocast + cuDNN settings for one call of `part` ("generator" / "decoder" / None)."""
    device = torch.device(device)
    dt = autocast_dtype(opts, part, device, vq) if (part and half) else None
    cudnn_prev = torch.backends.cudnn.benchmark
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode() if opts.inference_mode else torch.no_grad())
        if dt is not None:
            # autocast's weight-cast cache must be off while CUDA graphs are captured
            stack.enter_context(torch.autocast(device.type, dtype=dt, cache_enabled=not opts.cuda_graphs))
        if device.type == "cuda" and opts.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        try:
            yield dt
        finally:
            torch.backends.cudnn.benchmark = cudnn_prev


def to_normal(x):
    """Clone inference-mode tensors (recursively in lists / tuples) so callers can use them freely."""
    if torch.is_tensor(x):
        return x.clone() if x.is_inference() else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_normal(v) for v in x)
    return x


# -- decode chunking ----------------------------------------------------------------------------------------
CPU_DECODE_BUDGET = 2 << 30  # bytes of activations a CPU decode may hold at once
CUDA_DECODE_FRACTION = 0.5  # of the free GPU memory


def decode_bytes_per_image(ae_cfg, h: int, w: int, elem: int = 4) -> int:
    """Estimated peak bytes of decoding one [C, h, w] latent: 4 live copies of the decoder's largest
    feature map (the level where channels x pixels peaks, counting the upsampled map that still has the
    lower level's width), or, for VQ, 3.5 [h*w, n_embed] float32 distance matrices if that is more.
    Against the peak RSS growth of one end-to-end image at 256 px (``python -m lddgan_core.bench``, CPU):
    KL-f8 240 MiB reference path / 160 MiB fast path, estimate 256 MiB; VQ-f4 384 / 392, estimate 448."""
    n = len(ae_cfg.ch_mult)
    biggest = 0
    for lvl in range(n):  # level 0 is the full resolution
        res_h, res_w = h << (n - 1 - lvl), w << (n - 1 - lvl)
        c = max(ae_cfg.ch * ae_cfg.ch_mult[lvl], ae_cfg.ch * ae_cfg.ch_mult[min(lvl + 1, n - 1)])
        biggest = max(biggest, c * res_h * res_w)
    est = 4 * biggest * elem
    if ae_cfg.kind == "vq":
        est = max(est, 7 * h * w * ae_cfg.n_embed * 4 // 2)
    return est


def decode_chunk_size(model, latents: torch.Tensor, opts: FastOptions, chunk_size: int | None = None,
                      tile: int | None = None) -> int:
    """How many latents to decode at once (images decoded in tiles of `tile` latent pixels: sized per tile)."""
    B = latents.shape[0]
    if chunk_size is not None:
        return max(1, min(B, int(chunk_size)))
    if opts.decode_chunk is None:
        return B
    if opts.decode_chunk != "auto":
        return max(1, min(B, opts.decode_chunk))
    dev = latents.device
    h, w = latents.shape[2], latents.shape[3]
    if tile is not None:  # tiled images: the memory of one tile's decode per image
        h, w = min(h, tile), min(w, tile)
    per = decode_bytes_per_image(model.autoencoder.cfg, h, w, _decode_elem(model, opts, dev))
    return max(1, min(B, int(_decode_budget(dev) // per)))


# -- tiled decoding (images too big to decode at once) ----------------------------------------------------------
MIN_TILE = 8  # latent pixels


def _decode_budget(device: torch.device) -> float:
    """Bytes a decode may use: CPU_DECODE_BUDGET, or on CUDA a fraction of the free memory, counting what
    PyTorch's allocator holds in its cache but does not use as free (it is reused before asking the driver)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return CUDA_DECODE_FRACTION * (free + max(0, cached))
    return CPU_DECODE_BUDGET


def _decode_elem(model, opts: FastOptions, device: torch.device) -> int:
    """Bytes per activation of a decode: 2 under a half-precision decoder (unless it fell back to float32)."""
    half = autocast_dtype(opts, "decoder", device) and not getattr(model, "_decoder_half_failed", False)
    return 2 if half else 4


def decode_tile_size(model, latents: torch.Tensor, opts: FastOptions, tile_size: int | None = None) -> int | None:
    """Latent pixels per square tile, or None to decode whole images. "auto" tiles only when one image's
    estimated decode memory is over the budget, with the largest tile (a multiple of 8) that fits it."""
    h, w = latents.shape[2], latents.shape[3]
    t = opts.decode_tile if tile_size is None else int(tile_size)
    if t is None:
        return None
    if t == "auto":
        cfg = model.autoencoder.cfg
        elem = _decode_elem(model, opts, latents.device)
        budget = _decode_budget(latents.device)
        if decode_bytes_per_image(cfg, h, w, elem) <= budget:
            return None
        t = MIN_TILE
        while t + MIN_TILE < max(h, w) and decode_bytes_per_image(cfg, t + MIN_TILE, t + MIN_TILE, elem) <= budget:
            t += MIN_TILE
        if decode_bytes_per_image(cfg, t, t, elem) > budget:
            warnings.warn(f"decode: even {t}x{t}-latent tiles need about {decode_bytes_per_image(cfg, t, t, elem) >> 20} "
                          f"MiB, over the {int(budget) >> 20} MiB budget; decoding with the smallest tiles",
                          RuntimeWarning, stacklevel=3)
    return None if t >= h and t >= w else t


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering 0..n with at least `overlap` shared between neighbours
    (the last tile ends at n)."""
    if tile >= n:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """Blend weights along one axis of a tile: linear over `ramp` pixels at each side that has a neighbour."""
    i = torch.arange(length, dtype=torch.float32) + 0.5
    w = torch.ones(length)
    if rise:
        w = torch.minimum(w, i / ramp)
    if fall:
        w = torch.minimum(w, (length - i) / ramp)
    return w


def decode_tiled(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, tile: int, factor: int,
                 overlap: int | None = None) -> torch.Tensor:
    """Decode latents [n, C, h, w] in overlapping square tiles of `tile` latent pixels (`overlap` shared
    between neighbours, default tile // 4) with `decode` ([n, C, th, tw] -> [n, 3, th*f, tw*f]); tiles are
    blended with linear ramps across the overlaps. Memory: one tile's decode plus the output image.
    Approximate: the decoder's attention and receptive field see only one tile (bench / tests report the
    PSNR against decoding whole images); one tile covering the latent gives the whole-image decode exactly."""
    n, _, h, w = z.shape
    overlap = max(1, tile // 4) if overlap is None else int(overlap)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = wsum = None
    for y0 in ys:
        th = min(tile, h)
        wy = _ramp(th * factor, overlap * factor, y0 > 0, y0 + th < h)
        for x0 in xs:
            tw = min(tile, w)
            img = decode(z[:, :, y0:y0 + th, x0:x0 + tw]).float()
            if out is None:
                out = img.new_zeros(n, img.shape[1], h * factor, w * factor)
                wsum = img.new_zeros(1, 1, h * factor, w * factor)
            wgt = (wy[:, None] * _ramp(tw * factor, overlap * factor, x0 > 0, x0 + tw < w)[None]).to(img.device)
            ys_, xs_ = slice(y0 * factor, (y0 + th) * factor), slice(x0 * factor, (x0 + tw) * factor)
            out[:, :, ys_, xs_] += img * wgt
            wsum[:, :, ys_, xs_] += wgt
    return out / wsum


# -- compiled / graphed callables -------------------------------------------------------------------------
class CallableCache(dict):
    """Compiled / graphed callables of one model. Copies and pickles start empty: compiled code and
    captured graphs belong to the original's tensors."""

    def __deepcopy__(self, memo):
        return CallableCache()

    def __reduce__(self):
        return (CallableCache, ())


class CUDAGraphed:
    """Replays one captured CUDA graph per input signature (shapes, dtypes, keyword names) of
    ``fn(*tensors, **tensors)``.

    Inputs are copied into static buffers, the graph is replayed and the static output cloned, so the
    result equals an eager call; the first call for a new signature warms up on a side stream, then captures.
    All graphs of one callable share one memory pool (safe: they never run at once, and each static output
    is cloned right after its replay, before another graph can reuse its memory). At most `max_graphs`
    signatures are captured; further ones run eagerly.
    """

    def __init__(self, fn: Callable, warmup: int = 2, max_graphs: int = 8):
        self.fn, self.warmup, self.graphs, self.max_graphs, self.pool = fn, warmup, {}, max_graphs, None

    def __call__(self, *args, **kw):
        names = sorted(kw)
        tensors = list(args) + [kw[n] for n in names]
        if not all(torch.is_tensor(a) and a.is_cuda for a in tensors):
            return self.fn(*args, **kw)
        key = (tuple((tuple(a.shape), a.dtype, a.device) for a in tensors), tuple(names), len(args),
               torch.is_autocast_enabled("cuda"))
        if key not in self.graphs and len(self.graphs) >= self.max_graphs:
            return self.fn(*args, **kw)
        if key not in self.graphs:
            static = [a.clone() for a in tensors]
            call = lambda: self.fn(*static[:len(args)], **dict(zip(names, static[len(args):])))  # noqa: E731
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    call()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = call()
            self.graphs[key] = (graph, static, static_out)
        graph, static, static_out = self.graphs[key]
        for buf, a in zip(static, tensors):
            buf.copy_(a)
        graph.replay()
        return static_out.clone()


def wrap(fn: Callable, opts: FastOptions, device: torch.device) -> Callable:
    """fn, compiled and / or CUDA-graphed as the options say."""
    if opts.compile:
        backend = "inductor" if opts.compile is True else opts.compile
        fn = torch.compile(fn, backend=backend, dynamic=False)
    if opts.cuda_graphs and torch.device(device).type == "cuda":
        fn = CUDAGraphed(fn)
    return fn


def warn_decoder_fallback(name: str) -> None:
    warnings.warn(f"{name}: the half-precision decoder produced non-finite values; decoding in float32 from "
                  f"now on (FastOptions(decoder_fp32=True) makes this the default)", RuntimeWarning, stacklevel=3)
