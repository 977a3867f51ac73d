"""The shipped default model: what the recipe says it is, small enough, and it really draws the shapes data
(checked with the evaluation classifier against an untrained model of the same architecture)."""
import dataclasses
import json
import os

import pytest
import torch

import lddgan_core as L
from lddgan_core.tools.cli import DEFAULT_MODEL
from lddgan_core.eval import evaluate_model
from lddgan_core.tools.recipes import SHAPES_AUTOENCODER, SHAPES_GENERATOR, SHAPES_RECIPE, ShapesRecipe

N = 256  # samples per check (seeds 0..255)
# measured for the shipped file at N=256 (2026-12-02, recipe shapes_v3: f=2 autoencoder, 4x16x16 latents, 7000 GAN
# iterations): modes 14 (16 at n=5000; two rare ones miss 256 samples), unrecognised 0.059, FID 12.1, precision 0.29,
# recall 0.79, KL(gen||data) 0.91; the untrained network: 0, 1.0, 163.7, 0, 0, 13.8. Bounds leave a margin.
MIN_MODES, MAX_UNRECOGNISED, MAX_FID, MIN_PRECISION, MIN_RECALL, MAX_KL = 13, 0.12, 16.0, 0.2, 0.65, 1.5


@pytest.fixture(scope="module")
def default():
    return L.load(DEFAULT_MODEL)


def test_file_and_config_match_the_recipe(default):
    assert os.path.getsize(DEFAULT_MODEL) <= 15_000_000
    assert L.load(DEFAULT_MODEL, dtype=None).dtype == torch.float16  # stored in fp16 (fp32 would not fit 15 MB)
    cfg = default.config
    assert cfg.image_size == 32 and cfg.name == "lddgan-shapes32" and default.num_timesteps == SHAPES_RECIPE.timesteps
    for k, v in SHAPES_GENERATOR.items():
        assert getattr(cfg.generator, k) == (tuple(v) if isinstance(v, (list, tuple)) else v), k
    for k, v in SHAPES_AUTOENCODER.items():
        assert getattr(cfg.autoencoder, k) == (tuple(v) if isinstance(v, (list, tuple)) else v), k
    recipe = ShapesRecipe.from_record(json.loads(cfg.provenance["recipe"]))
    for f in dataclasses.fields(ShapesRecipe):  # the file was made by `python -m lddgan_core.recipes shapes` as it is now
        assert getattr(recipe, f.name) == getattr(SHAPES_RECIPE, f.name), f.name


def test_it_draws_the_shapes_data(default, one_thread):
    # the same architecture with untrained weights draws nothing the classifier recognises
    r = evaluate_model(default, n=N, seed=0)
    untrained = L.LDDGAN(default.config).eval()
    u = evaluate_model(untrained, n=N, seed=0)
    g, c, ug = r["generated"], r["ceiling"], u["generated"]
    assert g["modes_covered"] >= MIN_MODES and ug["modes_covered"] <= 4
    assert g["unrecognised"] <= MAX_UNRECOGNISED and ug["unrecognised"] > 0.9
    assert g["fid"] < MAX_FID and ug["fid"] > 2 * g["fid"] and c["fid"] < g["fid"]
    assert g["precision"] > MIN_PRECISION and g["recall"] > MIN_RECALL
    assert g["kl_gen_data"] < MAX_KL


def test_seeds_reproduce_and_differ(default):
    a = default.decode(default.sample(seeds=[7, 8]))
    b = default.decode(default.sample(seeds=[7]))
    assert (a[0] - b[0]).abs().max() < 1e-4  # an image depends only on its seed
    assert (a[0] - a[1]).abs().max() > 0.3  # different seeds, different images
