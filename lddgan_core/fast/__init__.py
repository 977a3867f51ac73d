"""The fast inference path (see ``decode.py`` for the pieces): options, run-time context, decode planning,
tiled decoding, compiled / CUDA-graphed callables."""
from .decode import (autocast_dtype, CallableCache, channels_last_for, configure, CPU_DECODE_BUDGET,
                     CUDA_DECODE_FRACTION, CUDAGraphed, decode_bytes_per_image, decode_chunk_size, decode_tile_size,
                     decode_tiled, FastOptions, MIN_TILE, runtime, tile_starts, to_normal, warn_decoder_fallback,
                     wrap)
