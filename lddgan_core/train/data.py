"""Training images: a folder (recursive; png / jpg / webp; resized and center-cropped) or an in-memory
batch, with optional kornia augmentation for small datasets. Images are [N, 3, H, W] float32 in [-1, 1];
``latents.build_latents`` turns them into cached latents."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from ..data.images import load_image
from ..diffusion.sampler import torch_seed
from ..errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def find_images(folder: str | os.PathLike) -> list[str]:
    """Image files under `folder` (recursive, sorted). Raises InputError if the folder is missing or holds
    no image files, saying what it does hold."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise InputError(f"image folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise InputError(f"image folder {folder!r} is not a folder")
    found, others = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            (found if f.lower().endswith(IMAGE_EXTENSIONS) else others).append(os.path.join(root, f))
    if not found:
        what = (f"it holds {len(others)} other file(s), e.g. {[os.path.relpath(o, folder) for o in others[:5]]}"
                if others else "it is empty")
        raise InputError(f"image folder {folder!r} has no images with extensions {list(IMAGE_EXTENSIONS)} "
                         f"(searched recursively); {what}")
    return found


def load_file(path: str, size: int) -> torch.Tensor:
    """One image file -> [3, size, size] in [-1, 1]; InputError saying why when it cannot be read."""
    from PIL import Image, UnidentifiedImageError


    try:
        return load_image(path, size)[0]
    except UnidentifiedImageError:
        raise InputError("not a readable image (PIL cannot identify it)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"{type(e).__name__}: {e}") from None


def check_files(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) for every file PIL cannot open and verify (header and structure; cheap)."""
    from PIL import Image

    bad = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
            bad.append((p, "not a readable image (PIL cannot identify it)" if "cannot identify" in str(e)
                        else f"{type(e).__name__}: {e}"))
    return bad


def bad_files_error(folder: str, bad: list[tuple[str, str]], total: int, some_good: bool) -> InputError:
    lines = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    tail = " (pass skip_bad / --skip-bad-images to train on the readable ones)" if some_good else ""
    return InputError(f"image folder {os.fspath(folder)!r}: {len(bad)} of {total} image file(s) could not be "
                      f"read{tail}:\n{lines}{more}")


def folder_fingerprint(folder: str, paths: list[str]) -> str:
    """sha256 of the relative paths, sizes and modification times (cheap; changes when a file does)."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.relpath(p, folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def from_tensor(images: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, str]:
    """An in-memory batch [B, 3, H, W] in [-1, 1] -> (float32 CPU copy resized (shorter side, bicubic,
    antialiased) and center-cropped to `size` when its size differs, sha256 of the input bytes)."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images: expected a tensor [B, 3, H, W] in [-1, 1], got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if images.shape[0] < 1:
        raise InputError("images: the batch is empty")
    x = images.detach().float().cpu().clone()  # clone: leaves inference mode / shared storage behind
    if not torch.isfinite(x).all():
        raise InputError("images: contain NaN or infinite values")
    if x.min() < -1.5 or x.max() > 1.5:
        raise InputError(f"images: values must lie in [-1, 1], got min {x.min().item():.3g}, max {x.max().item():.3g}")
    fp = hashlib.sha256(x.contiguous().numpy().tobytes() + str(tuple(x.shape)).encode()).hexdigest()
    if size is not None and tuple(x.shape[2:]) != (size, size):
        x = resize_center_crop(x, size)
    return x.contiguous(), fp


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, size, size]: scale the shorter side to `size`, crop the middle."""
    import torch.nn.functional as F

    H, W = x.shape[2:]
    s = size / min(H, W)
    nh, nw = max(size, round(H * s)), max(size, round(W * s))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top:top + size, left:left + size]


@dataclass(frozen=True)
class Augment:
    """Augmentation for small datasets, applied before encoding: `copies` augmented versions of every image
    are encoded once and cached (copy 0 is the image itself)."""

    copies: int = 8  # versions per image, the original included
    hflip: bool = True  # random horizontal flip (p = 0.5)
    translate: float = 0.0625  # max shift as a fraction of the size (reflection padding)
    jitter: float = 0.05  # brightness / contrast / saturation jitter (hue: a fifth of it)

    def __post_init__(self):
        if not isinstance(self.copies, int) or self.copies < 1:
            raise InputError(f"augment copies must be a positive integer, got {self.copies!r}")
        if not 0 <= self.translate < 0.5 or self.jitter < 0:
            raise InputError(f"augment: translate must be in [0, 0.5) and jitter >= 0, "
                             f"got {self.translate}, {self.jitter}")

    def key(self) -> str:
        return f"aug(c={self.copies},f={int(self.hflip)},t={self.translate},j={self.jitter})"

    @classmethod
    def coerce(cls, spec) -> "Augment | None":
        """An Augment from what the edges pass: None / False / 0 / 1 (no augmentation), True (the defaults),
        a number of copies, or an Augment."""
        if spec is None or spec is False or spec == 0 or spec == 1:
            return None
        if spec is True:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, int):
            return cls(copies=spec)
        raise InputError(f"augment: expected a bool, a number of copies or an Augment, got {spec!r}")


def augment(images: torch.Tensor, aug: Augment, seed: int) -> torch.Tensor:
    """[N, 3, H, W] -> [N * copies, 3, H, W] (copy-major: rows k*N .. k*N+N-1 are copy k); copy 0 is the
    input. Copy k draws its random parameters from torch's RNG seeded with seed * 1000003 + k (folded into 64 bits
    when larger: ``sampling.torch_seed``), inside fork_rng so the caller's global RNG is untouched."""
    import kornia.augmentation as K

    ops = []
    if aug.hflip:
        ops.append(K.RandomHorizontalFlip(p=0.5))
    if aug.translate > 0:
        ops.append(K.RandomAffine(degrees=0.0, translate=(aug.translate, aug.translate), padding_mode="reflection",
                                  p=1.0))
    if aug.jitter > 0:
        j = aug.jitter
        ops.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 5, p=1.0))
    out = [images]
    if not ops:
        return images.repeat(aug.copies, 1, 1, 1)
    pipe = K.AugmentationSequential(*ops)
    for k in range(1, aug.copies):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(seed * 1000003 + k))
            x01 = pipe((images.float() + 1) / 2)  # kornia's colour ops work on [0, 1]
        out.append((x01.clamp(0, 1) * 2 - 1).to(images.dtype))
    return torch.cat(out)


def load_images(folder: str, size: int, skip_bad: bool = False, log=None) -> tuple[torch.Tensor, str]:
    """Every image of `folder` as [N, 3, size, size] in [-1, 1] plus the folder's fingerprint (for autoencoder
    training, which needs pixels; the GAN trainer streams images through ``latents.build_latents``)."""
    paths = find_images(folder)
    bad = check_files(paths)
    imgs = []
    for p in paths:
        if any(p == b for b, _ in bad):
            continue
        try:
            imgs.append(load_file(p, size))
        except InputError as e:
            bad.append((p, str(e)))
    if bad and (not skip_bad or not imgs):
        raise bad_files_error(folder, bad, len(paths), bool(imgs))
    if bad and log is not None:
        log(f"skipped {len(bad)} unreadable image(s): " + ", ".join(p for p, _ in bad[:10]))
    return torch.stack(imgs), folder_fingerprint(folder, paths) + f"|size={size}|bad={len(bad)}"
