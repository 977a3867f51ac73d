"""The emoji recipe runs end to end (tiny budget, a few pictures), records its data source, resumes; the shipped
models' short names resolve; `lddgan eval` judges an emoji model against the emoji data."""
import dataclasses
import json

import pytest
import torch

import lddgan_core as L
from emoji_util import needs_sources
from lddgan_core.errors import InputError
from lddgan_core.hub import shipped
from lddgan_core.tools import recipes as R

TINY = R.EMOJI_RECIPE.with_arguments(size=32, ae_steps=2, ae_batch=4, gan_steps=2, gan_batch=4, copies=2)
TINY = dataclasses.replace(
    TINY, autoencoder=dict(kind="kl", embed_dim=4, z_channels=4, ch=32, ch_mult=(1, 1), num_res_blocks=1),
    generator=dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), nz=8, z_emb_dim=32, n_mlp=1),
    timesteps=2)


@needs_sources
def test_train_emoji_end_to_end_records_the_source_and_resumes(tmp_path, one_thread):
    out = str(tmp_path / "run")
    logs = []
    path = R.train_emoji(out, TINY, limit=12, log=logs.append)
    m = L.load(path)
    assert m.config.name == "lddgan-emoji32" and m.config.image_size == 32 and tuple(m.latent_shape) == (4, 16, 16)
    prov = m.config.provenance
    assert prov["source"] == "recipe emoji" and prov["data_dataset"] == "emoji"
    assert len(prov["data_font_sha256"]) == 64 and prov["data_emoji_test_version"]  # the data's versions recorded
    assert R.EmojiRecipe.from_dict(json.loads(prov["recipe"])) == TINY
    # 12 pictures x 2 augmented copies in the latents; the latent scale gives them std latent_std
    assert any("latents: 24 x [4, 16, 16]" in line for line in logs)
    lat_line = next(line for line in logs if line.startswith("latents: 24"))
    scale = float(lat_line.rsplit(" ", 1)[1])
    assert scale == m.config.scale_factor > 0
    img = m.decode(m.sample(seeds=[0, 1]))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    # again: nothing retrained, the finished GAN run resumed at its end, the same generator
    logs2 = []
    m2 = L.load(R.train_emoji(out, TINY, limit=12, log=logs2.append))
    assert not any(line.startswith("autoencoder:") for line in logs2) and any("resuming" in x for x in logs2)
    for k, v in m.generator.state_dict().items():
        assert torch.equal(v, m2.generator.state_dict()[k]), k
    # `lddgan eval` sees an emoji model and judges it against the emoji data, in the emoji classifier's space
    from lddgan_core.tools.cli import main

    js = str(tmp_path / "eval.json")
    assert main(["eval", "--model", path, "--n", "12", "--json", js]) == 0
    with open(js) as f:
        r = json.load(f)
    assert r["what"] == "emoji images" and r["n_samples"] == 12 and r["sampling"]["n"] == 12
    assert r["vs_heldout"]["generated"]["fid"] > r["vs_heldout"]["ceiling"]["fid"]  # an untrained model
    assert r["n_heldout"] > 200 and 0 <= r["memorisation"]["pixel"]["frac_closer_than_heldout_p5"] <= 1


def test_emoji_recipe_checks_its_fields():
    with pytest.raises(InputError, match="latent_std"):
        dataclasses.replace(R.EMOJI_RECIPE, latent_std=0)
    with pytest.raises(InputError, match="copies"):
        dataclasses.replace(R.EMOJI_RECIPE, copies=0)
    with pytest.raises(InputError, match="unknown argument"):
        R.EMOJI_RECIPE.with_arguments(imgs=3)
    assert R.EMOJI_RECIPE.augment().copies == R.EMOJI_RECIPE.copies
    assert dataclasses.replace(R.EMOJI_RECIPE, copies=1).augment() is None
    assert R.EmojiRecipe.from_dict(R.EMOJI_RECIPE.to_dict()) == R.EMOJI_RECIPE


def test_latent_scale_gives_the_latents_the_recipe_std():
    class Lat:  # a LatentSet's fields: KL posterior mean and std
        mean = torch.randn(64, 4, 8, 8) * 3.0
        std = torch.full((64, 4, 8, 8), 0.5)

    s = R.EMOJI_RECIPE.latent_scale(Lat)
    spread = (3.0 ** 2 + 0.5 ** 2) ** 0.5
    assert s == pytest.approx(spread / R.EMOJI_RECIPE.latent_std, rel=0.03)
    assert dataclasses.replace(R.EMOJI_RECIPE, scale_factor=2.0).latent_scale(Lat) == 2.0


def test_shipped_short_names_resolve(tmp_path, monkeypatch):
    assert shipped.resolve_model_path("shapes") == shipped.DEFAULT_MODEL
    assert shipped.resolve_model_path("emoji") == shipped.EMOJI_MODEL
    assert shipped.resolve_model_path(None) == shipped.DEFAULT_MODEL
    m = L.load("fixture")
    assert m.config.image_size == L.load(shipped.FIXTURE_MODEL).config.image_size
    # a file of that name in the working folder is what the user means
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emoji").write_bytes(b"x")
    assert shipped.resolve_model_path("emoji") == "emoji"


@needs_sources
def test_autoencoder_probe_reports_heldout_reconstruction(tmp_path, one_thread):
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "tools"))
    import emoji_ae_probe

    assert emoji_ae_probe.main([str(tmp_path), "--steps", "2", "--batch", "4", "--ch-mult", "1,1", "--size", "32"]) == 0
    with open(tmp_path / "probe.json") as f:
        r = json.load(f)
    assert r["latent_side"] == 16 and r["steps"] == 2 and 0 < r["heldout_psnr_db"] < 40 and r["heldout_recon_fid"] > 0
    assert (tmp_path / "reconstructions.png").is_file()
