"""What a creator hit in the real frontend (issue 15), checked on the node classes without ComfyUI: the Model
Loader lists only loadable LDDGAN models (no fine-tune side files, caches or temporary files); LDDGAN Encode with
fit='error' refuses every size but the model's own; LATENTs made by LDDGAN nodes carry the identity of the
model's latent space, and another model's latents are refused while untagged ones are accepted."""
import os
import re
import shutil
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO

sys.path.insert(0, str(REPO))  # nodes/ is not pip-installed: import it from the checkout

import lddgan_core as L  # noqa: E402
import nodes as P  # noqa: E402
from nodes import convert, listing  # noqa: E402

SHIPPED = "lddgan_tiny_fixture.safetensors"


@pytest.fixture(scope="module")
def shipped():
    return P.LDDGANModelLoader().load(SHIPPED)[0]


def _listed():
    return P.LDDGANModelLoader.INPUT_TYPES()["required"]["model_name"][0]


# -- (1) the loader's list ------------------------------------------------------------------------------------
def test_loader_lists_only_loadable_models(tmp_path, monkeypatch, random_model):
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    m = random_model("kl")
    m.save(tmp_path / "mine.safetensors")
    m.save(tmp_path / "sub" / "deep.safetensors")
    # what a fine-tune run leaves beside its model, and what an interrupted save can leave
    save_file({"w": torch.zeros(2)}, str(tmp_path / "mine.discriminator.safetensors"),
              metadata={"format": "lddgan-discriminator", "config": "{}"})
    os.makedirs(tmp_path / "mine.cache")
    m.save(tmp_path / "mine.cache" / "latents-0123.safetensors")  # even a model file there is a cache entry
    shutil.copy(tmp_path / "mine.safetensors", tmp_path / ".tmp-abc123mine.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))  # no metadata: not ours
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 100)
    (tmp_path / "huge_header.safetensors").write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    (tmp_path / "empty.safetensors").write_bytes(b"")

    names = _listed()
    ours = [n for n in names if not n.startswith("lddgan_") and not n.startswith("[download]")]
    assert sorted(ours) == ["mine.safetensors", "sub/deep.safetensors"], names
    assert SHIPPED in names and "lddgan_shapes32.safetensors" in names
    for bad in ("mine.discriminator.safetensors", "mine.cache/latents-0123.safetensors", "foreign.safetensors"):
        msg = P.LDDGANModelLoader.VALIDATE_INPUTS(bad)
        assert isinstance(msg, str) and "is neither an LDDGAN model" in msg, bad
    assert P.LDDGANModelLoader.VALIDATE_INPUTS("mine.safetensors") is True

    # the header check is cached per file, and redone when the file changes
    save_file({"w": torch.zeros(3)}, str(tmp_path / "mine.safetensors"))  # replaced by a foreign file
    assert "mine.safetensors" not in _listed()
    m.save(tmp_path / "mine.safetensors")
    assert "mine.safetensors" in _listed()


def test_side_file_rule():
    assert listing.is_side_file("a.cache/latents-1.safetensors") and listing.is_side_file(".tmp-xyz.safetensors")
    assert listing.is_side_file("sub/.tmp-1a.safetensors")
    assert not listing.is_side_file("cache_model.safetensors") and not listing.is_side_file("my.tmp.safetensors")


def test_a_finetuned_model_is_listed_and_its_side_files_are_not(tmp_path, monkeypatch, shipped, one_thread):
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    imgs = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    P.LDDGANFineTune().finetune(shipped, steps=2, batch_size=2, lr_g=5e-5, lr_d=1e-4, schedule="sigmoid", gamma=6.0,
                                r1_gamma=1.0, ema_decay=0.999, augment=0, seed=0, save_name="ft", save_every=1,
                                images=imgs)
    on_disk = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.safetensors"))
    assert "ft.discriminator.safetensors" in on_disk and len(on_disk) >= 2, on_disk
    ours = [n for n in _listed() if not n.startswith("lddgan_") and not n.startswith("[download]")]
    assert ours == ["ft.safetensors"], (ours, on_disk)


# -- (2) Encode, fit = error ----------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(32, 32), (768, 768), (16, 32), (8, 8)])
def test_encode_fit_error_refuses_other_sizes(shipped, h, w):
    x = torch.rand(1, h, w, 3)
    with pytest.raises(L.InputError, match=rf"image: {w}x{h} px does not fit this model: fit='error' takes only "
                                           r"the model's own size, 16x16 px"):
        P.LDDGANEncode().encode(shipped, x, "error")
    assert "'error' refuses them" in P.LDDGANEncode.INPUT_TYPES()["required"]["fit"][1]["tooltip"]


def test_encode_fit_error_takes_the_model_size(shipped):
    x = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    lat = P.LDDGANEncode().encode(shipped, x, "error")[0]
    assert lat["samples"].shape == (2, 4, 8, 8)


# -- (3) latent identity ----------------------------------------------------------------------------------------
def test_latents_carry_the_model_identity(shipped, random_model):
    other = random_model("kl", seed=3)  # same channels and sizes, other weights: decoding its latents is noise
    tag = convert.latent_space_id(shipped)
    assert tag.startswith("ae-") and not convert.same_latent_space(tag, other)
    assert convert.same_latent_space(tag, shipped)
    sampled = P.LDDGANSampler().sample(shipped, 0, 2, 1.0)[0]
    encoded = P.LDDGANEncode().encode(shipped, torch.rand(1, 16, 16, 3), "error")[0]
    again = P.LDDGANSampler().sample(shipped, 0, 1, 0.5, latent=encoded)[0]
    same = P.LDDGANSampler().sample(shipped, 0, 1, 0.0, latent=encoded)[0]  # denoise 0 returns it
    for lat in (sampled, encoded, again, same):
        assert lat[convert.LATENT_TAG] == tag

    msg = r"latent: these latents were made by another LDDGAN model's autoencoder \(latent space " + re.escape(tag)
    with pytest.raises(L.InputError, match=msg):
        P.LDDGANDecode().decode(other, sampled)
    with pytest.raises(L.InputError, match=msg):
        P.LDDGANSampler().sample(other, 0, 1, 0.5, latent=encoded)
    # untagged latents (core nodes, Load Latent) are accepted, and give what the tagged ones give
    plain = {"samples": sampled["samples"]}
    torch.testing.assert_close(P.LDDGANDecode().decode(shipped, plain)[0], P.LDDGANDecode().decode(shipped, sampled)[0])
    assert P.LDDGANDecode().decode(other, plain)[0].shape == (2, 16, 16, 3)


def test_identity_survives_precision_and_is_the_autoencoders(shipped, tmp_path):
    tag = convert.latent_space_id(shipped)
    for precision in ("fp16", "bf16"):
        with torch.inference_mode(False):
            m = P.LDDGANModelLoader().load(SHIPPED, precision=precision)[0]
        assert convert.same_latent_space(tag, m), (precision, tag, convert.latent_space_id(m))
    # another generator on the same autoencoder (what fine-tuning makes) shares the latent space
    with torch.inference_mode(False):
        m = P.LDDGANModelLoader().load(SHIPPED)[0]
        with torch.no_grad():
            for p in m.generator.parameters():
                p.add_(0.1)
    assert convert.latent_space_id(m) == tag
    with torch.inference_mode(False):
        m = P.LDDGANModelLoader().load(SHIPPED)[0]
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in m.autoencoder.parameters():  # the autoencoder retrained a little: 5% noise
                p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))
    assert not convert.same_latent_space(tag, m), (tag, convert.latent_space_id(m))
