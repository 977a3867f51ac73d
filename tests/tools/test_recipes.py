"""The recipe that produces the shipped default model runs end to end (tiny budget), resumes, and the ablation
summary computes mean +- std over seeds."""
import dataclasses
import glob
import json
import os
import shutil

import numpy as np
import pytest
import torch

import lddgan_core as L
from emoji_util import needs_sources
from lddgan_core.data.shapes import make_shapes, to_model_range
from lddgan_core.errors import InputError
from lddgan_core.train.api import training_mode
from lddgan_core.train.autoencoder import load_autoencoder
from lddgan_core.train.latents import build_latents
from lddgan_core.tools.recipes import (ABLATION_RECIPE, SHAPES_AUTOENCODER, SHAPES_RECIPE, ShapesRecipe,
                                       ablation_table, _summarize, latent_spread, run_ablation,
                                       train_shapes)

TINY = SHAPES_RECIPE.with_arguments(
    images=48, ae_steps=3, ae_batch=8, ae_lr=4e-4, gan_steps=3, gan_batch=8, lr_g=2e-4, lr_d=1e-4, r1_gamma=0.02,
    lazy_reg=2, ema_decay=0.9, gamma=6.0, timesteps=2, schedule="sigmoid", seed=0, scale_factor=None,
    autoencoder=dict(SHAPES_AUTOENCODER, ch=32),
    generator=dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), nz=8, z_emb_dim=32, n_mlp=1))


def test_train_shapes_end_to_end_and_resume(tmp_path, one_thread):
    out = str(tmp_path / "run")
    logs = []
    path = train_shapes(out, TINY, log=logs.append)
    assert path == os.path.join(out, "model_fp16.safetensors") and os.path.isfile(path)
    m = L.load(path)
    assert m.config.image_size == 32 and m.config.name == "lddgan-shapes32" and m.num_timesteps == 2
    assert m.config.autoencoder.downsample_factor == 2 and tuple(m.latent_shape) == (4, 16, 16)
    recipe = json.loads(m.config.provenance["recipe"])
    assert recipe["gan"]["steps"] == 3 and recipe["images"] == 48 and recipe["scale_factor"] is None
    # no fixed scale: the one that gives the training latents a std of latent_std (1.1) in diffusion space
    assert recipe["latent_std"] == 1.1
    ae, size = load_autoencoder(os.path.join(out, "autoencoder", "autoencoder.safetensors"))
    with training_mode():
        lat = build_latents(ae, size, images=to_model_range(make_shapes(48, 0)[0]), seed=0)
    assert m.config.scale_factor == pytest.approx(latent_spread(lat) / 1.1, rel=6e-3)  # kept to 3 figures
    assert ShapesRecipe.from_record(recipe) == TINY
    img = m.decode(m.sample(seeds=[0, 1]))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    with open(os.path.join(out, "recipe.json")) as f:
        assert json.load(f)["ae_steps"] == 3
    # run again: the autoencoder is not retrained, the finished GAN run is resumed at its end
    mtime = os.path.getmtime(os.path.join(out, "autoencoder", "autoencoder.safetensors"))
    logs2 = []
    path2 = train_shapes(out, TINY, log=logs2.append)
    assert os.path.getmtime(os.path.join(out, "autoencoder", "autoencoder.safetensors")) == mtime
    assert any("resuming" in line for line in logs2)
    m2 = L.load(path2)
    # a fixed latent scale (a new run folder sharing the finished autoencoder)
    out3 = str(tmp_path / "run3")
    shutil.copytree(os.path.join(out, "autoencoder"), os.path.join(out3, "autoencoder"))
    m3 = L.load(train_shapes(out3, dataclasses.replace(TINY, scale_factor=3.0), log=lambda msg: None))
    assert m3.config.scale_factor == 3.0 and json.loads(m3.config.provenance["recipe"])["scale_factor"] == 3.0
    with pytest.raises(InputError, match="scale_factor"):
        train_shapes(out3, dataclasses.replace(TINY, scale_factor=0.0), log=lambda msg: None)
    for k, v in m.generator.state_dict().items():
        assert torch.equal(v, m2.generator.state_dict()[k]), k

    # the ablation on that autoencoder: one variant, one seed, evaluated; a finished run is reused
    ae = os.path.join(out, "autoencoder", "autoencoder.safetensors")
    abl = str(tmp_path / "abl")
    kw = dict(log=lambda m: None)
    tiny = ABLATION_RECIPE.with_arguments(steps=2, batch=8, lr_g=2e-4, lr_d=1e-4, d_steps=1, r1_gamma=0.02,
                                          lazy_reg=2, ema_decay=0.999, disc_ngf=32, n_eval=12, images=48)
    tiny = dataclasses.replace(tiny, scale_factor=None)  # estimated from the latents
    res = run_ablation(abl, ae, tiny, seeds=[0], variants=["adv+WL"], **kw)
    (row,) = res["runs"]
    assert row["variant"] == "adv+WL" and row["steps"] == 2 and row["n_eval"] == 12
    assert 0 <= row["metrics"]["precision"] <= 1 and row["metrics"]["fid"] > row["ceiling"]["fid"]
    assert set(res["summary"]) == {"adv+WL", "real vs real (ceiling)"}
    assert os.path.isfile(os.path.join(abl, "ablation.md")) and os.path.isfile(os.path.join(abl, "adv+WL_s0",
                                                                                          "eval.json"))
    # the loss curves, summarised: means over the run's first / middle / last sixth
    curve = res["curves"]["adv+WL"]
    # (2 iterations, logged at the last: the sigmoid weight there is 1 - sigmoid(6) = 0.0025)
    assert curve["n"] == 1 and len(curve["d_loss"]) == 3 and 0 < curve["d_loss"][-1] < 10
    assert curve["w"][-1] == pytest.approx(0.0025, abs=1e-3)
    # the runs' last sample grids side by side (one variant, one seed: that grid itself)
    from PIL import Image

    with Image.open(os.path.join(abl, "ablation_samples.png")) as pic, \
            Image.open(sorted(glob.glob(os.path.join(abl, "adv+WL_s0", "samples", "*.png")))[-1]) as grid:
        assert pic.size == grid.size and np.array_equal(np.asarray(pic.convert("RGB")), np.asarray(grid.convert("RGB")))
    again = run_ablation(abl, ae, tiny, seeds=[0], variants=["adv+WL"], **kw)
    assert again["runs"][0]["metrics"] == row["metrics"]
    with pytest.raises(InputError, match="finished run"):
        run_ablation(abl, ae, tiny.with_arguments(steps=3), seeds=[0], variants=["adv+WL"], **kw)
    with pytest.raises(InputError, match="unknown"):
        run_ablation(abl, ae, tiny, seeds=[0], variants=["adv+typo"], **kw)
    with pytest.raises(InputError, match="finished run"):  # a different latent scale is a different experiment
        run_ablation(abl, ae, dataclasses.replace(tiny, scale_factor=3.0), seeds=[0], variants=["adv+WL"], **kw)
    with pytest.raises(InputError, match="scale_factor"):
        run_ablation(str(tmp_path / "abl2"), ae, dataclasses.replace(tiny, scale_factor=-1.0), seeds=[0],
                     variants=["adv+WL"], **kw)
    assert row["scale_factor_arg"] is None and row["scale_factor"] > 0  # estimated
    fixed = run_ablation(str(tmp_path / "abl3"), ae, dataclasses.replace(tiny, scale_factor=3.0), seeds=[0],
                         variants=["adv"], **kw)
    assert fixed["runs"][0]["scale_factor"] == 3.0 and fixed["settings"]["scale_factor"] == 3.0


def test_loss_windows(tmp_path):
    from lddgan_core.tools.recipes import CURVE_KEYS, _mean_windows, curves_table, loss_windows

    p = tmp_path / "losses.csv"
    rows = ["step," + ",".join(CURVE_KEYS) + ",seconds"]
    rows += [f"{i}," + ",".join(str(i * (k + 1)) for k in range(len(CURVE_KEYS))) + ",0" for i in range(10, 121, 10)]
    p.write_text("\n".join(rows) + "\n")
    w = loss_windows(str(p), 120)  # sixths of 120 iterations: 1-20, 51-70, 101-120
    assert w["windows"] == [(1, 20), (51, 70), (101, 120)]
    assert w["d_loss"] == [15.0, 65.0, 115.0] and w["w"] == [90.0, 390.0, 690.0]
    m = _mean_windows([w, {**w, "d_loss": [5.0, 0.0, 10.0]}])
    assert m["d_loss"] == [10.0, 32.5, 62.5] and m["n"] == 2
    assert "| adv | d_loss | 10.000 | 32.500 | 62.500 |" in curves_table({"adv": m})


def test_ablation_summary_mean_std():
    runs = [{"variant": v, "seed": s, "metrics": {"fid": f, "recall": r}}
            for v, vals in (("adv", [(3.0, 0.1), (5.0, 0.3), (4.0, 0.2)]), ("adv+WL", [(1.0, 0.5), (1.0, 0.7)]))
            for s, (f, r) in enumerate(vals)]
    runs[0]["ceiling"] = {"fid": 0.5, "recall": 0.9}
    s = _summarize(runs)
    assert s["adv"]["fid"]["mean"] == pytest.approx(4.0) and s["adv"]["fid"]["std"] == pytest.approx(1.0)
    assert s["adv"]["recall"]["std"] == pytest.approx(0.1) and s["adv+WL"]["fid"]["std"] == 0.0
    assert s["adv+WL"]["recall"]["n"] == 2
    table = ablation_table(s, 3)
    assert "| adv | 4.000 +- 1.000 | 0.200 +- 0.100 |" in table
    assert "| adv+WL | 1.000 +- 0.000 | 0.600 +- 0.141 |" in table
    assert "| real vs real (ceiling) | 0.500 | 0.900 |" in table


def test_probe_trains_and_evaluates(tmp_path, one_thread):
    """`recipes probe`: a GAN-stage run with overrides, evaluated at its end; the row and the model are written."""
    import json as _json

    from lddgan_core.tools import recipes

    calls = []
    rows = recipes.run_probe(str(tmp_path), {"images": 64, "steps": 2, "batch_size": 4, "eval_every": 2,
                                             "n_eval": 64, "gen": {"nf": 16, "num_res_blocks": 1, "use_tanh": False},
                                             "ngf": 8, "scale": 2.5}, log=lambda m: None,
                             progress=lambda step, total, logs: calls.append((step, total, logs["d_loss"])))
    assert [r["step"] for r in rows] == [2]
    # the progress callback after each iteration (the command line's ProgressBar), with the iteration's losses
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)] and all(c[2] > 0 for c in calls)
    assert rows[0]["fid"] > 0 and 0 <= rows[0]["precision"] <= 1
    # diagnostics: the t = 0 step alone, and D's logits per t (real, generated, L1 of the x0 prediction)
    assert rows[0]["one_step"]["fid"] > 0 and set(rows[0]["d_per_t"]) == {"t0", "t1", "t2", "t3"}
    assert all(len(v) == 3 and v[2] > 0 for v in rows[0]["d_per_t"].values())
    assert _json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["step"] == 2
    assert (tmp_path / "model.safetensors").is_file()


def test_diagnose_separates_the_steps(one_thread):
    """eval.diagnose on the shipped model: starting from real x_0 is the autoencoder's reconstruction (the best
    row); latent noise is harmless, latent blur is not (README "Recipe probes")."""
    from lddgan_core.eval.diagnose import chain_check, latent_sensitivity
    from lddgan_core.hub.shipped import DEFAULT_MODEL
    from lddgan_core.errors import InputError

    rows = chain_check(DEFAULT_MODEL, n=200)
    assert [r["start"] for r in rows] == ["x_4", "x_3", "x_2", "x_1", "x_0"] and rows[-1]["steps"] == 0
    assert rows[-1]["fid"] < min(r["fid"] for r in rows[:-1]) and rows[-1]["precision"] > 0.5
    sens = {r["perturbation"]: r for r in latent_sensitivity(DEFAULT_MODEL, n=200)}
    assert sens["noise 0.1 x std"]["precision"] > 0.5
    # (v2's f=4 decoder: blur precision 0.04; v3's f=2 one suffers less, 0.37 at n=200, still far below noise's)
    assert sens["3x3 box blur"]["precision"] < sens["noise 0.1 x std"]["precision"] - 0.2
    assert sens["3x3 box blur"]["fid"] > 3 * sens["clean"]["fid"]  # v3 at n=200: 9.2 against 2.0
    with pytest.raises(InputError, match="starts"):
        chain_check(DEFAULT_MODEL, n=20, starts=(9,))


def test_diagnose_one_mode(one_thread, capsys):
    """chain_check / latent_sensitivity with `mode` start from images of that mode and score against held-out
    images of it: the reconstruction is near the real-vs-real score, the shipped model's draws from noise are far
    below it; a bad mode is refused, also by the command."""
    from lddgan_core.eval.diagnose import chain_check, latent_sensitivity
    from lddgan_core.hub.shipped import DEFAULT_MODEL
    from lddgan_core.errors import InputError
    from lddgan_core.tools.recipes import main as recipes_main

    x4, x0 = chain_check(DEFAULT_MODEL, n=100, starts=(4, 0), mode=6)
    print("mode 6 from x_4 / x_0:", x4, x0)
    assert x0["precision"] > 0.6 and x0["recall"] > 0.6 and x0["fid"] < 1 and x0["unrecognised"] == 0
    assert x4["precision"] < x0["precision"] - 0.3 and x4["fid"] > 5 * x0["fid"]
    clean = latent_sensitivity(DEFAULT_MODEL, n=100, noise=(), mode=6)[0]
    assert clean["perturbation"] == "clean" and clean == {"perturbation": "clean", **{k: x0[k] for k in clean
                                                                                         if k != "perturbation"}}
    with pytest.raises(InputError, match="mode: expected an integer 0..15"):
        chain_check(DEFAULT_MODEL, n=20, mode=16)
    assert recipes_main(["diagnose", "--mode", "-1"]) == 2
    assert "--mode: expected an integer 0..15, got -1" in capsys.readouterr().err
    assert recipes_main(["diagnose", "--n", "5"]) == 2
    assert "--n: expected at least 10" in capsys.readouterr().err


def test_recipe_flags_booleans_and_d_steps():
    """Boolean recipe fields are --x / --no-x flags (argparse's type=bool would read "False" as True); flags not
    given leave the recipe alone."""
    import argparse

    from lddgan_core.tools import recipes

    p = argparse.ArgumentParser()
    recipes._add_flags(p, recipes.SHAPES_RECIPE, recipes.SHAPES_FLAGS)
    a = p.parse_args(["--use-tanh", "--no-fast", "--d-steps", "1", "--scale-factor", "6.25", "--disc-ngf", "64"])
    r = recipes.SHAPES_RECIPE.with_arguments(**recipes._given(a, recipes.SHAPES_FLAGS))
    assert r.use_tanh is True and r.gan.fast is False and r.gan.d_steps == 1 and r.scale_factor == 6.25
    assert r.disc_ngf == 64 and r.generator_fields()["use_tanh"] is True
    assert recipes._given(p.parse_args([]), recipes.SHAPES_FLAGS) == {}
    # the defaults: the shipped model's recipe
    d = recipes.SHAPES_RECIPE
    assert d.use_tanh is False and d.gan.d_steps == 3 and d.gan.fast is True and d.scale_factor is None
    assert d.latent_std == 1.1 and d.autoencoder["ch_mult"] == (1, 2)  # f=2: 4x16x16 latents
    assert d.disc_ngf == 32 and d.gan.lr_d == 2.5e-4 and d.gan.steps == 7000 and d.gan.ema_warmup is True
    # the ablation trains with the default model's GAN settings (its G is smaller, its batch 16)
    a = recipes.ABLATION_RECIPE
    assert a.generator["use_tanh"] is False and a.scale_factor == d.scale_factor and a.disc_ngf == d.disc_ngf
    assert (a.gan.d_steps, a.gan.lr_d, a.gan.lr_g, a.gan.fast) == (d.gan.d_steps, d.gan.lr_d, d.gan.lr_g, d.gan.fast)
    q = argparse.ArgumentParser()
    recipes._add_flags(q, a, recipes.ABLATION_FLAGS)
    assert a.with_arguments(**recipes._given(q.parse_args(["--d-steps", "1"]), recipes.ABLATION_FLAGS)).gan.d_steps == 1


def test_latent_std_is_checked_and_decides_the_scale():
    for bad in (0, -1.0, True, "1.1"):
        with pytest.raises(InputError, match="latent_std"):
            ShapesRecipe(latent_std=bad)
    assert ShapesRecipe(scale_factor=None, latent_std=None).latent_scale(None) == "auto"
    assert ShapesRecipe(scale_factor=3.0).latent_scale(None) == 3.0  # a fixed scale wins over latent_std


@needs_sources
def test_finetune_emoji_recipe_end_to_end(tmp_path, one_thread, capsys):
    """`recipes finetune-emoji`: writes the group's first N training emoji, runs `lddgan finetune --model emoji`
    (two iterations here), evaluates the base and the fine-tuned model on the same seeds and writes the result and
    the grids; an unknown group is refused before anything runs."""
    from lddgan_core.tools.recipes import main as recipes_main

    assert recipes_main(["finetune-emoji", "--out", str(tmp_path / "x"), "--group", "Animals"]) == 2
    assert "group: expected one of" in capsys.readouterr().err and not (tmp_path / "x").exists()
    out = tmp_path / "run"
    assert recipes_main(["finetune-emoji", "--out", str(out), "--group", "Food & Drink", "--images", "10",
                         "--n-eval", "64", "--", "--steps", "2", "--batch", "2"]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["group"] == "Food & Drink" and r["images"] == 10 and r["finetune_args"] == ["--steps", "2", "--batch", "2"]
    assert len(list((out / "data").glob("*.png"))) == 10 and (out / "run" / "model.safetensors").is_file()
    for name in ("base", "finetuned"):
        assert r[name]["n_samples"] == 64 and r[name]["n_finetune"] == 10 and 0 <= r[name]["in_group"] <= 1
        v = r[name]["vs_unseen"]
        assert (v["generated"]["n_fake"], v["generated_same_n"]["n_fake"], v["ceiling"]["n_fake"]) == (64, 10, 10)
    # two iterations moved the weights: the fine-tuned samples are not the base model's
    assert r["finetuned"]["vs_unseen"]["generated"] != r["base"]["vs_unseen"]["generated"]
    for png in ("data.png", "samples.png", "base.png"):
        assert (out / png).stat().st_size > 1000
    # the same --out again: refused (its old pictures and run would spoil the check), nothing touched
    assert recipes_main(["finetune-emoji", "--out", str(out), "--group", "Food & Drink", "--images", "10"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert json.loads((out / "result.json").read_text()) == r
    # a failing `lddgan finetune` (a bad flag after --) gives its exit status and one error line, no traceback
    rc = recipes_main(["finetune-emoji", "--out", str(tmp_path / "bad"), "--group", "Food & Drink", "--images", "10",
                       "--n-eval", "64", "--", "--steps", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and "lddgan finetune failed with exit status" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "result.json").exists()


def test_finetune_mode_recipe_end_to_end(tmp_path, one_thread, capsys):
    """`recipes finetune-mode` writes N images of the mode, runs `lddgan finetune` (two iterations here), scores
    the result against held-out images of the mode; the same --out again is refused, a bad mode before anything
    runs."""
    from lddgan_core.tools.recipes import main as recipes_main

    out = tmp_path / "m6"
    assert recipes_main(["finetune-mode", "--out", str(out), "--mode", "6", "--images", "10", "--n-eval", "20",
                         "--", "--steps", "2", "--batch", "2"]) == 0
    r = json.loads((out / "result.json").read_text())
    assert (r["mode"], r["mode_name"], r["images"], r["n"]) == (6, "green square", 10, 20)
    assert 0 <= r["in_mode"] <= 1 and r["fid"] > 0 and r["seconds"] > 0
    assert len(list((out / "data").glob("*.png"))) == 10
    assert recipes_main(["finetune-mode", "--out", str(out), "--mode", "6"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert recipes_main(["finetune-mode", "--out", str(tmp_path / "x"), "--mode", "16"]) == 2
    assert "mode must be an integer" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_d_separation_rows_and_inputs(one_thread, capsys):
    """eval.diagnose.d_separation: a fresh D (the official near-zero initialised final conv: nearly the same logit
    for every input) sits at 0.5 accuracy; after a few D-only steps the rows carry finite per-t logits; the frozen
    model is not modified; bad inputs are refused by the function and the command."""
    import math

    from lddgan_core.errors import InputError
    from lddgan_core.eval.diagnose import d_separation
    from lddgan_core.model import load_model
    from lddgan_core.hub.shipped import DEFAULT_MODEL
    from lddgan_core.tools.recipes import main as recipes_main
    from lddgan_core.train.config import default_discriminator

    model = load_model(DEFAULT_MODEL)
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    rows = d_separation(model, fake="model", steps=3, batch=8, n_train=16, n_test=32, eval_every=2,
                        disc_config=default_discriminator(model.latent_shape, ngf=8))
    assert [r["step"] for r in rows] == [0, 2, 3] and all(r["fake"] == "model" for r in rows)
    assert rows[0]["accuracy"] == 0.5 and all(rows[0][k]["real_logit"] == rows[0][k]["fake_logit"]
                                              for k in rows[0] if k.startswith("t"))
    last = rows[-1]
    assert 0 <= last["accuracy"] <= 1 and {k for k in last if k.startswith("t")} <= {"t0", "t1", "t2", "t3"}
    assert all(math.isfinite(v["real_logit"]) and math.isfinite(v["fake_logit"]) for k, v in last.items()
               if k.startswith("t"))
    # the size of the difference D is asked to see: the model's x_0 error grows with t (noisier inputs)
    rms = [last[f"t{k}"]["x0_rms"] for k in range(4) if f"t{k}" in last]
    assert all(r > 0 for r in rms) and rms[-1] > rms[0]
    assert all(torch.equal(v, before[k]) for k, v in model.generator.state_dict().items())
    for kw, msg in (({"fake": "sharp"}, "fake: expected one of"), ({"steps": -1}, "steps: expected an integer"),
                    ({"batch": 1}, "batch: expected an integer >= 2")):
        with pytest.raises(InputError, match=msg):
            d_separation(model, **kw)
    assert recipes_main(["d-separation", "--steps", "-2"]) == 2
    assert "steps: expected an integer >= 0" in capsys.readouterr().err
    assert recipes_main(["d-separation", "--ngf", "0"]) == 2
    assert "--ngf: expected an integer >= 1" in capsys.readouterr().err


def test_probe_from_shipped_continues_the_default_model(tmp_path, one_thread):
    """`"from_shipped": true`: the probe trains the shipped generator itself (its scale and T), not a new one; a
    generator override next to it is refused before anything trains."""
    import pytest as _pytest

    from lddgan_core.errors import InputError
    from lddgan_core.hub.shipped import DEFAULT_MODEL
    from lddgan_core.model import load_model
    from lddgan_core.tools import recipes

    with _pytest.raises(InputError, match="from_shipped"):
        recipes.run_probe(str(tmp_path / "bad"), {"from_shipped": True, "images": 16, "scale": 2.0},
                          log=lambda m: None)
    rows = recipes.run_probe(str(tmp_path / "ok"), {"from_shipped": True, "images": 64, "steps": 1, "batch_size": 4,
                                                    "eval_every": 1, "n_eval": 64, "ngf": 8, "image_d_weight": 1},
                             log=lambda m: None)
    assert [r["step"] for r in rows] == [1]
    shipped, probed = load_model(DEFAULT_MODEL), load_model(str(tmp_path / "ok" / "model.safetensors"))
    assert probed.config.scale_factor == shipped.config.scale_factor
    assert probed.num_timesteps == shipped.num_timesteps
    a, b = shipped.generator.state_dict(), probed.generator.state_dict()
    assert a.keys() == b.keys()
    # one optimizer step (plus the fp16 save) moves the weights a little, from the shipped ones, not from a fresh init
    diffs = [(a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point()]
    assert 0 < max(diffs) < 0.05
