"""The one place the nodes import the library from.

Inside ComfyUI the pack is a package (custom_nodes/<pack>/) whose directory is not on sys.path, so the
library is reached relative to it; when ``nodes`` is imported as a top-level package (the unit tests,
run from the repository root) or the library is pip-installed, the absolute import is used.
"""
try:
    from .. import lddgan_core as L
except ImportError:  # "attempted relative import beyond top-level package": nodes/ is not inside the pack
    import lddgan_core as L

from importlib import import_module

_shipped = import_module(L.__name__ + ".hub.shipped")
_sampler = import_module(L.__name__ + ".diffusion.sampler")
_file = import_module(L.__name__ + ".formats.lddgan_file")
_fast = import_module(L.__name__ + ".fast")
_limits = import_module(L.__name__ + ".limits")

default_model_path = _shipped.default_model_path
start_step_for = _sampler.start_step_for
MAX_SEED = _sampler.MAX_SEED
seeds_for_batch = _sampler.seeds_for_batch
parse_dtype = _file.parse_dtype
save_model = _file.save_model
decode_bytes_per_image = _fast.decode_bytes_per_image
check_latent = _limits.check_latent
_atomic = import_module(L.__name__ + ".atomic")
is_temp_name = _atomic.is_temp_name
check_paths_fit = _atomic.check_paths_fit

__all__ = ["L", "default_model_path", "start_step_for", "seeds_for_batch", "parse_dtype", "save_model",
           "decode_bytes_per_image", "is_temp_name", "check_paths_fit", "check_latent",
           "MAX_SEED"]
