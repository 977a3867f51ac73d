"""The fast inference path, chosen per model with ``LDDGAN.set_fast``:

* ``options``: ``FastOptions``, one field per optimisation, and the ``NetImpl`` it builds the networks with;
* ``context``: memory format, autocast dtype and grad mode of one call;
* ``decode``: the one decode planner (chunk and tile sizes from a memory budget) and tiled decoding;
* ``compiled``: torch.compile / CUDA-graph wrappers.
"""
from .options import MIN_TILE, FastOptions
from .decode import DecodePlan, decode_bytes_per_image, plan_decode
