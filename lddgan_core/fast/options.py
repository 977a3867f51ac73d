"""The options of the fast inference path: one switch per optimisation, each checked against the reference path.

    m.set_fast(True)                         # FastOptions(): every piece that is exact in float32 (default)
    m.set_fast(False)                        # the reference path (the code the parity tests pin down)
    m.set_fast(FastOptions(sdpa=False))      # any single piece off
    m.set_fast("bf16")                       # + bfloat16 autocast (GPU, or a CPU with AMX / AVX512-BF16)

Pieces (fields of ``FastOptions``; the first four become the ``nets.ops.NetImpl`` the networks are built with):

* ``fir``: the generator's FIR resampling as strided / transposed depthwise convolutions instead of zero
  insertion + padding + filtering (``ops.fir_*_conv``).
* ``sdpa``: ``F.scaled_dot_product_attention`` in the generator's and the autoencoder's attention blocks.
* ``upsample_conv``: the decoder's nearest-2x upsampling + 3x3 conv as one stride-2 transposed conv with a
  4x4 kernel (4/9 of the MACs of the largest decoder convs; ``ops.upsample_conv2x``).
* ``inplace``: SiLU and residual adds of the autoencoder's ResNet blocks reuse memory; the generator's blocks
  fuse each AdaGN into one multiply-add and do SiLU, bias and residual ops in place (no-grad, eval mode only).
* ``channels_last``: NHWC memory format (None: the autoencoder always; the generator on CUDA only, where
  NHWC is the layout tensor-core convolutions want; on CPU its small feature maps gained nothing).
* ``precompute``: the posterior coefficients moved to the device once per sampling run, not at every step
  (bit-identical values).
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

The float32 pieces agree with the reference to rounding (tests/*/test_fast*.py: <= 1e-5 per op, <= 1e-4 on
images); half precision is reported as max abs error and PSNR against float32 by ``lddgan_core.bench``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..nets.ops import NetImpl

MIN_TILE = 8  # latent pixels: the smallest decode tile
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass(frozen=True)
class FastOptions:
    fir: bool = True  # FIR up/down-sampling as strided / transposed depthwise convs
    sdpa: bool = True  # scaled_dot_product_attention in both networks
    upsample_conv: bool = True  # decoder: nearest-2x + 3x3 conv as one 4x4 stride-2 transposed conv
    inplace: bool = True  # ResNet blocks of both networks: fused / in-place ops when no grad is recorded
    channels_last: bool | None = None  # None: autoencoder always, generator on CUDA only
    precompute: bool = True  # posterior coefficients on the device once per sampling run
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
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
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

    def net_impl(self) -> NetImpl:
        """The op forms the networks are built with under these options."""
        return NetImpl(fir_conv=self.fir, sdpa=self.sdpa, upsample_conv=self.upsample_conv, fused=self.inplace)
