"""ComfyUI services the nodes use, with fallbacks so node classes run (and are tested) without ComfyUI.

Inside ComfyUI every function here delegates to ``comfy.model_management`` / ``comfy.utils`` /
``folder_paths``; outside it (CI, scripts) compute runs on the CPU, progress and interrupts are no-ops,
and the model folders come from ``$LDDGAN_MODELS_DIR`` plus the models shipped with the pack.
``comfy`` and ``folder_paths`` are imported lazily, inside functions, never at module import.
"""
from __future__ import annotations

import os
from importlib import import_module

import torch

from .lib import L, default_model_path, is_temp_name

FOLDER = "lddgan"  # the folder_paths key: models/lddgan (and extra_model_paths.yaml entries "lddgan: ...")
EXTENSIONS = {".safetensors"}
SHIPPED_DIR = os.path.dirname(default_model_path())  # lddgan_core/models inside the pack


def _mm():
    """comfy.model_management, or None outside ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm


def _folder_paths():
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def in_comfyui() -> bool:
    return _mm() is not None and _folder_paths() is not None


# -- devices ----------------------------------------------------------------------------------------------
def compute_device() -> torch.device:
    mm = _mm()
    return mm.get_torch_device() if mm else torch.device("cpu")


def offload_device() -> torch.device:
    mm = _mm()
    return mm.unet_offload_device() if mm else torch.device("cpu")


def output_device() -> torch.device:
    """Where node outputs (IMAGE / LATENT tensors) live."""
    mm = _mm()
    return mm.intermediate_device() if mm else torch.device("cpu")


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (None when unknown: outside ComfyUI)."""
    mm = _mm()
    if mm is None:
        return None
    return int(mm.get_free_memory(device))


def make_room(bytes_needed: int, device: torch.device) -> None:
    """Ask ComfyUI to unload other models until ``bytes_needed`` are free on ``device`` (no-op outside)."""
    mm = _mm()
    if mm is not None and torch.device(device).type != "cpu":
        mm.free_memory(bytes_needed, device)


def make_room_for_training(device: torch.device) -> None:
    """Training needs most of an accelerator (weights, EMA, discriminator, optimizer states, activations):
    as ComfyUI's own training node does, unload every other model first. No-op on the CPU and outside."""
    mm = _mm()
    if mm is not None and torch.device(device).type != "cpu":
        mm.unload_all_models()
        mm.soft_empty_cache()


def empty_cache() -> None:
    mm = _mm()
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize() -> None:
    """Wait for the compute device's queued work (no-op on the CPU), so that chunks can be timed."""
    dev = compute_device()
    if dev.type == "cpu":
        return
    sync = getattr(getattr(torch, dev.type, None), "synchronize", None)
    if sync is not None:
        sync()


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error from any backend (torch raises OutOfMemoryError on CUDA; other
    backends raise RuntimeError mentioning 'out of memory')."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if not isinstance(exc, RuntimeError):  # MemoryError too: Python's own allocation failure on the CPU
        return isinstance(exc, MemoryError)
    msg = str(exc).lower()
    # CUDA / MPS: "out of memory"; the CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to
    # allocate N bytes" or "not enough memory"
    return any(s in msg for s in ("out of memory", "can't allocate memory", "cannot allocate memory",
                                  "not enough memory", "defaultcpuallocator"))


def available_memory(device) -> int | None:
    """Bytes that one computation could get on ``device`` at best (every other model unloaded): the device's total
    memory inside ComfyUI; outside it the system's available memory for the CPU (/proc/meminfo) and the device's
    total for CUDA; None when unknown. Work needing more can never run: it is refused up front."""
    mm = _mm()
    if mm is not None and hasattr(mm, "get_total_memory"):
        return int(mm.get_total_memory(device))
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[1])
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (no-op outside ComfyUI)."""
    mm = _mm()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


# -- progress -----------------------------------------------------------------------------------------------
class _NullProgress:
    """Stand-in for comfy.utils.ProgressBar outside ComfyUI; keeps the values for tests."""

    def __init__(self, total: int):
        self.total, self.current, self.history = total, 0, []

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.history.append(self.current)


def progress_bar(total: int):
    try:
        import comfy.utils
    except ImportError:
        return _NullProgress(total)
    return comfy.utils.ProgressBar(total)


# -- model folders --------------------------------------------------------------------------------------------
def register_model_folder() -> None:
    """Register ``models/lddgan`` (first: LDDGAN Save Model writes there) and, last, the pack's shipped
    models with folder_paths. extra_model_paths.yaml entries under ``lddgan:`` are loaded before custom
    nodes; they are kept, after models/lddgan, as core folders keep theirs. Only ``.safetensors`` files
    are listed."""
    fp = _folder_paths()
    if fp is None:
        return
    default = os.path.join(fp.models_dir, FOLDER)
    if FOLDER not in fp.folder_names_and_paths:
        fp.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))
    else:
        paths, exts = fp.folder_names_and_paths[FOLDER]
        if default in paths:
            paths.remove(default)
        paths.insert(0, default)
        exts.clear()
        exts.update(EXTENSIONS)
    fp.add_model_folder_path(FOLDER, SHIPPED_DIR, is_default=False)


def _fallback_dirs() -> list[str]:
    env = os.environ.get("LDDGAN_MODELS_DIR")
    return ([env] if env else []) + [SHIPPED_DIR]


def model_dirs() -> list[str]:
    fp = _folder_paths()
    if fp is not None and FOLDER in fp.folder_names_and_paths:
        return list(fp.get_folder_paths(FOLDER))
    return _fallback_dirs()


def list_models() -> list[str]:
    """Names (relative to their folder, '/'-separated) of the .safetensors files in every model folder."""
    fp = _folder_paths()
    if fp is not None and FOLDER in fp.folder_names_and_paths:  # never the temporary files of a save
        return [n for n in fp.get_filename_list(FOLDER) if not is_temp_name(n)]
    names = set()
    for d in _fallback_dirs():
        for root, _dirs, files in os.walk(d, followlinks=True):
            for f in files:
                if os.path.splitext(f)[1].lower() in EXTENSIONS and not is_temp_name(f):
                    names.add(os.path.relpath(os.path.join(root, f), d).replace(os.sep, "/"))
    return sorted(names)


def resolve_model(name: str) -> str:
    """Full path of a model listed by ``list_models``; a clear error naming the folders otherwise."""
    fp = _folder_paths()
    if fp is not None and FOLDER in fp.folder_names_and_paths:
        path = fp.get_full_path(FOLDER, name)
    else:
        path = next((os.path.join(d, name) for d in _fallback_dirs() if os.path.isfile(os.path.join(d, name))), None)
    if path is None or not os.path.isfile(path):
        raise L.InputError(f"model_name: no LDDGAN model {name!r} in the model folders {model_dirs()} "
                           f"(put .safetensors files written by LDDGAN Save Model or `lddgan convert` there)")
    return path


def save_dir() -> str:
    """The folder LDDGAN Save Model writes to: the first ``lddgan`` folder that is not the pack's own."""
    dirs = [d for d in model_dirs() if os.path.abspath(d) != os.path.abspath(SHIPPED_DIR)]
    if not dirs:
        raise L.InputError("no folder to save LDDGAN models in: inside ComfyUI it is models/lddgan; "
                           "outside, set $LDDGAN_MODELS_DIR")
    return dirs[0]


def input_dir() -> str | None:
    """ComfyUI's input folder (where Load Image uploads go), or None outside ComfyUI."""
    fp = _folder_paths()
    return fp.get_input_directory() if fp is not None else None


TRAINING_FOLDER = "lddgan_training"  # extra_model_paths.yaml key for more folders of training images


def training_roots() -> list[str] | None:
    """The folders LDDGAN Fine-Tune may read images from: ComfyUI's input folder plus any folder listed under
    ``lddgan_training:`` in extra_model_paths.yaml. None outside ComfyUI (no confinement: a local script)."""
    base = input_dir()
    if base is None:
        return None
    roots = [base]
    fp = _folder_paths()
    if fp is not None and TRAINING_FOLDER in getattr(fp, "folder_names_and_paths", {}):
        roots += list(fp.get_folder_paths(TRAINING_FOLDER))
    return roots


# -- published weights (weights_manifest.json) ------------------------------------------------------------------
def _manifest():
    """The weights manifest ($LDDGAN_MANIFEST or the pack's), or None when it cannot be read: a broken
    manifest must not break the loader's list of local models."""
    zoo = import_module(L.__name__ + ".hub.zoo")
    try:
        return zoo.load_manifest()
    except L.LDDGANError as e:
        print(f"[LDDGAN] weights manifest not used: {e}")
        return None


def download_choices() -> list[str]:
    """'[download] <file>' labels for the manifest's models that are in no model folder yet."""
    zoo = import_module(L.__name__ + ".hub.zoo")
    m = _manifest()
    if m is None:
        return []
    return [zoo.download_choice(e) for e in zoo.missing_entries(m, model_dirs())]


def download_entry(choice: str):
    """The manifest entry behind a '[download] ...' label (installed or not), else None."""
    zoo = import_module(L.__name__ + ".hub.zoo")
    if not isinstance(choice, str) or not choice.startswith(zoo.DOWNLOAD_PREFIX):
        return None
    m = _manifest()
    return None if m is None else zoo.entry_for_choice(m, choice)


def install_download(entry, allow_download: bool) -> str:
    """Path of the entry's converted model: already installed in a model folder, or downloaded (only when
    allowed), verified and converted into the save folder, with a progress bar over the bytes."""
    zoo = import_module(L.__name__ + ".hub.zoo")
    for d in model_dirs():  # installed meanwhile (possibly by hand, or in another lddgan folder)
        if zoo.is_installed(entry, [d]):
            return zoo.ensure(entry.id, d, manifest=_manifest(), allow_download=False)
    bar = progress_bar(100)

    def progress(done, total):
        check_interrupt()
        bar.update_absolute(min(done, total or done), total or max(done, 1))

    def cancel():  # Cancel in ComfyUI raises its interrupt exception here, between two blocks of the download
        check_interrupt()
        return False

    return zoo.ensure(entry.id, save_dir(), manifest=_manifest(), allow_download=allow_download, progress=progress,
                      cancel=cancel)
