"""Training data: image folders (recursive, extensions, clear errors), in-memory batches, augmentation,
latent encoding and its cache, the scale-factor estimate."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lddgan_core.errors import InputError
from lddgan_core.train import Augment, LatentSet, build_latents, estimate_scale_factor, find_images
from lddgan_core.train import latents as latents_mod
from lddgan_core.train.data import augment, from_tensor, load_images


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def write_images(folder, n=6, size=(20, 24)):
    """n small images: solid colours with a bar, png/jpg/webp, every third in a subfolder."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    for i in range(n):
        a = np.zeros((size[0], size[1], 3), np.uint8) + rng.integers(30, 225, 3).astype(np.uint8)
        a[:, : 2 + i] = 255
        ext = ["png", "jpg", "webp"][i % 3]
        Image.fromarray(a).save(os.path.join(folder, "sub" if i % 3 == 0 else "", f"img{i}.{ext}"))
    return folder


def test_find_images_recursive_and_filtered(tmp_path):
    write_images(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".hidden" / "skip.png")
    found = [os.path.relpath(p, tmp_path) for p in find_images(tmp_path)]
    assert sorted(found) == sorted(["img1.jpg", "img2.webp", "img4.jpg", "img5.webp", os.path.join("sub", "img0.png"),
                                    os.path.join("sub", "img3.png")])


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_images(tmp_path / "nope")
    with pytest.raises(InputError, match="it is empty"):
        find_images(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match=r"2 other file\(s\).*a\.txt"):
        find_images(tmp_path)


def test_unreadable_images_are_listed_with_reasons(tmp_path):
    write_images(tmp_path, n=3)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "sub" / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError) as e:
        load_images(tmp_path, 16)
    msg = str(e.value)
    assert "2 of 5 image file(s) could not be read" in msg
    assert "broken.png: not a readable image" in msg and "empty.jpg" in msg and "--skip-bad-images" in msg
    logs = []
    x, _ = load_images(tmp_path, 16, skip_bad=True, log=logs.append)
    assert x.shape == (3, 3, 16, 16) and "skipped 2" in logs[0]


def test_folder_images_resized_and_center_cropped(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 8:32] = 255  # a white middle: after resizing to 10x20 and center-cropping 10 columns, all white
    Image.fromarray(a).save(tmp_path / "x.png")
    x, _ = load_images(tmp_path, 10)
    assert x.shape == (1, 3, 10, 10)
    assert x.min().item() > 0.9


def test_from_tensor_checks_and_resizes():
    x, fp = from_tensor(torch.zeros(2, 3, 8, 12), size=4)
    assert x.shape == (2, 3, 4, 4) and len(fp) == 64
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        from_tensor(torch.zeros(2, 8, 8))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        from_tensor(torch.full((1, 3, 4, 4), 255.0))
    with pytest.raises(InputError, match="NaN"):
        from_tensor(torch.full((1, 3, 4, 4), float("nan")))


def test_augment_is_seeded_and_keeps_the_original():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state = torch.get_rng_state()
    a = augment(x, Augment(copies=3), seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert a.shape == (9, 3, 16, 16) and torch.equal(a[:3], x)
    assert torch.equal(a, augment(x, Augment(copies=3), seed=5))
    assert not torch.allclose(a[3:], augment(x, Augment(copies=3), seed=6)[3:])
    assert (a[3:] - x.repeat(2, 1, 1, 1)).abs().mean() > 0.01 and a.min() >= -1 and a.max() <= 1
    for big in (2 ** 25, 2 ** 64 - 1, (2 ** 64 - 1) * 1_000_003 + 7):  # ComfyUI seeds, and seeds derived from them
        b = augment(x, Augment(copies=2), seed=big)
        assert torch.equal(b, augment(x, Augment(copies=2), seed=big)) and not torch.equal(b[3:], a[3:6])
    flip_only = augment(x, Augment(copies=8, translate=0.0, jitter=0.0), seed=0)
    for k in range(1, 8):  # every copy is the image or its mirror
        c = flip_only[3 * k: 3 * k + 3]
        assert all(torch.equal(c[i], x[i]) or torch.equal(c[i], x[i].flip(-1)) for i in range(3))


def test_build_latents_kl_and_cache(tmp_path, random_model, monkeypatch):
    m = random_model("kl")
    write_images(tmp_path / "imgs", n=4)
    cache = tmp_path / "cache"
    lat = build_latents(m.autoencoder, 16, folder=tmp_path / "imgs", cache_dir=cache)
    x, _ = load_images(tmp_path / "imgs", 16)
    mean, logvar = m.autoencoder.encode_posterior(x)
    assert torch.allclose(lat.mean, mean, atol=1e-5) and torch.allclose(lat.std, torch.exp(0.5 * logvar), atol=1e-5)
    assert len(os.listdir(cache)) == 1

    def fail(*a, **k):
        raise AssertionError("encoded again instead of using the cache")
    monkeypatch.setattr(latents_mod, "encode_images", fail)
    again = build_latents(m.autoencoder, 16, folder=tmp_path / "imgs", cache_dir=cache)
    assert torch.equal(again.mean, lat.mean) and again.fingerprint == lat.fingerprint
    with pytest.raises(AssertionError, match="encoded again"):  # another augmentation: another cache entry
        build_latents(m.autoencoder, 16, folder=tmp_path / "imgs", cache_dir=cache, augment=Augment(copies=2))
    with pytest.raises(AssertionError, match="encoded again"):  # other autoencoder weights: not reused
        with torch.no_grad():
            m.autoencoder.decoder.conv_out.bias.add_(1.0)
        build_latents(m.autoencoder, 16, folder=tmp_path / "imgs", cache_dir=cache)


def test_build_latents_vq_tensor_and_folder(tmp_path, random_model):
    m = random_model("vq")
    write_images(tmp_path, n=3)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    lat = build_latents(m.autoencoder, 16, images=x, folder=tmp_path, augment=Augment(copies=2), seed=1)
    assert lat.std is None and lat.mean.shape == ((2 + 3) * 2, 3, 8, 8)
    assert torch.allclose(lat.mean[:2], m.autoencoder.encode(from_tensor(x, 16)[0]), atol=1e-5)
    with pytest.raises(InputError, match="give images"):
        build_latents(m.autoencoder, 16)


def test_latent_draw():
    lat = LatentSet(torch.arange(8.0).view(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5), "x")
    eps = torch.ones(1, 1, 2, 2)
    assert torch.equal(lat.draw(torch.tensor([1]), eps), torch.arange(4.0, 8.0).view(1, 1, 2, 2) + 0.5)
    assert torch.equal(lat.draw(torch.tensor([0]), None), torch.arange(4.0).view(1, 1, 2, 2))


def test_estimate_scale_factor():
    g = torch.Generator().manual_seed(0)
    mean = (torch.rand(64, 4, 8, 8, generator=g) * 2 - 1) * 50  # |x| uniform on [0, 50]
    sf = estimate_scale_factor(LatentSet(mean, None, ""))
    assert sf == pytest.approx(50 * 0.999, rel=0.01)
    assert (mean / sf).abs().le(1).float().mean() >= 0.998  # the tanh range holds all but ~0.1%
    assert sf == float(f"{sf:.3g}")  # 3 significant digits
    with_noise = estimate_scale_factor(LatentSet(torch.zeros(1024, 4, 8, 8), torch.ones(1024, 4, 8, 8), ""))
    assert with_noise == pytest.approx(3.29, rel=0.04)  # 99.9% quantile of |N(0, 1)|
    with pytest.raises(InputError, match="degenerate"):
        estimate_scale_factor(LatentSet(torch.zeros(2, 1, 2, 2), None, ""))
