"""`lddgan eval` end to end: a tiny random model, a folder of real held-out PNGs, the Python API, Inception
plumbing with a stand-in network, and clear errors (exit status 2)."""
import json
import math
import os
import sys
import types

import pytest
import torch

from lddgan_core.hub.shipped import resolve_model_path as _model_path
from lddgan_core.tools.cli import main
from lddgan_core.eval import METRIC_KEYS, evaluate_images, evaluate_model
from lddgan_core.data.shapes import make_shapes, save_folder, to_model_range


@pytest.fixture
def model_file(tmp_path, random_model):
    p = tmp_path / "m.safetensors"
    random_model("kl").save(p)
    return p


def _check_result(r, n):
    for part in ("generated", "ceiling"):
        assert set(METRIC_KEYS) <= set(r[part]), part
        assert all(math.isfinite(r[part][k]) for k in METRIC_KEYS), r[part]
        assert len(r[part]["histogram"]) == 16
        assert sum(r[part]["histogram"]) + round(r[part]["unrecognised"] * n) == n
    assert sum(r["real_histogram"]) == n and r["n"] == n  # every real image is recognised
    assert (r["real_seed"], r["ceiling_seed"], r["features"], r["feature_dim"]) == (1, 2, "shapes", 128)
    # the ceiling compares two held-out sets: every mode present, metrics close to a perfect generator's
    c = r["ceiling"]
    assert c["modes_covered"] == 16 and c["precision"] > 0.8 and c["recall"] > 0.8 and c["coverage"] > 0.8
    assert r["classifier"]["accuracy_on_real"] > 0.98


def test_eval_model_writes_json_and_prints_table(tmp_path, model_file, capsys, one_thread):
    out = tmp_path / "res" / "eval.json"
    assert main(["eval", "--model", str(model_file), "--n", "64", "--batch", "24", "--seed", "3",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    _check_result(r, 64)
    assert r["what"] == "model" and r["source"] == str(model_file) and r["seed"] == 3
    # a random model draws no shapes: the classifier recognises none of its images
    assert r["generated"]["unrecognised"] > 0.9 and r["generated"]["modes_covered"] < 4
    assert r["ceiling"]["unrecognised"] == 0
    s = r["sampling"]
    assert s["images"] == 64 and s["batch"] == 24 and s["images_per_s"] > 0 and s["device"] == "cpu"
    assert os.listdir(out.parent) == ["eval.json"]  # written atomically: no temp file left
    text = capsys.readouterr().out
    assert "real vs real (ceiling)" in text and "FID" in text and "modes covered (of 16)" in text
    assert "images/s" in text


def test_default_model_and_the_api_agree(tmp_path, capsys, one_thread):
    # no --model: the default model path; evaluate_model with another batch size gives the same numbers
    out = tmp_path / "eval.json"
    assert main(["eval", "--n", "16", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["source"] == _model_path(None)
    api = evaluate_model(_model_path(None), n=16, batch=5)
    for k in METRIC_KEYS:
        assert api["generated"][k] == pytest.approx(r["generated"][k], rel=1e-3, abs=1e-6), k
        assert api["ceiling"][k] == r["ceiling"][k], k  # the same held-out sets


def test_folder_of_real_heldout_images_scores_like_the_ceiling(tmp_path, capsys, one_thread):
    folder = save_folder(str(tmp_path / "real"), 300, seed=5)  # held-out data of another seed, in subfolders
    out = tmp_path / "eval.json"
    assert main(["eval", "--images", folder, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    _check_result(r, 300)
    g, c = r["generated"], r["ceiling"]
    assert r["what"] == "images" and "sampling" not in r and r["image_size"] == [32, 32]
    assert g["modes_covered"] == 16 and g["modes_covered_at_threshold"] == 16
    assert g["fid"] < 1.5 * c["fid"] + 0.5, (g["fid"], c["fid"])
    for k in ("precision", "recall", "density", "coverage"):
        assert abs(g[k] - c[k]) < 0.1, k
    assert g["mean_confidence"] > 0.98
    # --n takes the first n images (sorted paths)
    assert main(["eval", "--images", folder, "--n", "40", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 40


def test_evaluate_images_float_and_uint8_agree(one_thread):
    images = make_shapes(32, seed=6)[0]
    a = evaluate_images(images)
    b = evaluate_images(to_model_range(images))
    assert a["generated"] == b["generated"]


class _StandIn(torch.nn.Module):
    """A stand-in for the Inception network: [N, 3, H, W] in [-1, 1] -> [N, 64] (records what it was given)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 64, 5, stride=2)
        self.seen = []

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.dtype, float(x.min()), float(x.max())))
        return self.conv(x).mean(dim=(2, 3))


def test_inception_features_plumbing(tmp_path, monkeypatch, capsys, one_thread):
    net, calls = _StandIn(), []

    def load_inception(path, device="cpu"):
        calls.append((path, device))
        return net

    monkeypatch.setitem(sys.modules, "lddgan_core.eval.inception", types.SimpleNamespace(load_inception=load_inception))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in")
    out = tmp_path / "eval.json"
    folder = save_folder(str(tmp_path / "real"), 24, seed=5)
    assert main(["eval", "--images", folder, "--features", "inception", "--inception-weights", str(weights),
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["features"] == "inception" and r["feature_dim"] == 64 and calls == [(str(weights), "cpu")]
    assert all(s[0][1:] == (3, 32, 32) and s[1] == torch.float32 and -1 <= s[2] and s[3] <= 1 for s in net.seen)
    # modes still come from the shapes classifier
    assert sum(r["generated"]["histogram"]) == 24 and r["classifier"]["accuracy_on_real"] > 0.9


def test_errors_exit_2(tmp_path, model_file, monkeypatch, capsys):
    def err(*argv):
        assert main(["eval", *argv]) == 2, argv
        return capsys.readouterr().err

    assert "--n must be >= 10" in err("--model", str(model_file), "--n", "5")
    assert "--n must be >= 10" in err("--model", str(model_file), "--n", "-3")
    assert "--batch must be >= 1" in err("--model", str(model_file), "--n", "16", "--batch", "0")
    assert "needs --inception-weights" in err("--features", "inception")
    missing = tmp_path / "nope.pth"
    e = err("--features", "inception", "--inception-weights", str(missing))
    assert "does not exist" in e and "nope.pth" in e
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "it is empty" in err("--images", str(empty))
    folder = save_folder(str(tmp_path / "few"), 12, seed=5)
    assert "fewer than --n 50" in err("--images", folder, "--n", "50")
    assert "does not exist" in err("--model", str(tmp_path / "none.safetensors"), "--n", "16")
    # Inception features when lddgan_core/eval/inception.py is not there
    monkeypatch.setitem(sys.modules, "lddgan_core.eval.inception", None)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    assert "Inception features are not available" in err("--images", folder, "--features", "inception",
                                                         "--inception-weights", str(weights))
    with pytest.raises(SystemExit):  # argparse: --model and --images exclude each other
        main(["eval", "--model", str(model_file), "--images", folder])


def test_mode_images_and_evaluate_mode():
    """mode_images returns only images of the asked mode; evaluate_mode scores a 'model' drawing real images of that
    mode as in-mode with high precision / recall, and one drawing another mode as out of mode."""
    import torch

    from lddgan_core.data.shapes import make_shapes, mode_images
    from lddgan_core.errors import InputError
    from lddgan_core.eval.evaluate import evaluate_mode

    imgs = mode_images(5, 12, seed=3)
    assert imgs.shape == (12, 3, 32, 32) and imgs.dtype == torch.uint8
    allimgs, lab = make_shapes(400, 3)
    assert torch.equal(imgs, allimgs[lab["mode"] == 5][:12])
    with pytest.raises(InputError):
        mode_images(16, 1, seed=3)

    class Drawing:  # a "model" whose samples are real images of one mode
        device = torch.device("cpu")

        def __init__(self, mode):
            self.pool = mode_images(mode, 48, seed=4).float() / 127.5 - 1

        def sample(self, seeds):
            return torch.tensor(seeds)

        def decode(self, idx):
            return self.pool[idx % len(self.pool)]

    good = evaluate_mode(Drawing(0), 0, n=48)
    bad = evaluate_mode(Drawing(9), 0, n=48)
    assert good["in_mode"] > 0.95 and bad["in_mode"] < 0.05
    assert good["precision"] > 0.6 and good["recall"] > 0.6 and bad["precision"] < 0.1


def test_mode_ceiling_keeps_only_the_mode():
    """mode_ceiling classifies a pool of samples and scores only those of the asked mode: a 'model' drawing half
    red circles (mode 0) and half green squares (mode 6) keeps about half for either mode and scores them like real
    images of it; a mode it never draws keeps nothing and has no metrics; a bad mode is refused before sampling."""
    import torch

    from lddgan_core.data.shapes import mode_images
    from lddgan_core.errors import InputError
    from lddgan_core.eval.evaluate import mode_ceiling

    class Mixed:
        device = torch.device("cpu")
        pool = torch.cat([mode_images(0, 40, seed=4), mode_images(6, 40, seed=4)]).float() / 127.5 - 1
        calls = 0

        def sample(self, seeds):
            Mixed.calls += 1
            return torch.tensor(seeds)

        def decode(self, idx):
            return self.pool[idx % len(self.pool)]

    red, green, none = mode_ceiling(Mixed(), [0, 6, 15], pool=80, n_real=48, batch=32)
    assert Mixed.calls == 3  # the pool is drawn once for all modes
    for row, mode in ((red, 0), (green, 6)):
        assert row["mode"] == mode and row["pool"] == 80
        assert 34 <= row["kept"] <= 42  # 40 drawn; the classifier may miss or misplace a few
        assert row["precision"] > 0.6 and row["recall"] > 0.4 and row["fid"] < 5
    assert none["kept"] < 10 and none["fid"] is None and none["precision"] is None
    assert mode_ceiling(Mixed(), 0, pool=80, n_real=48, batch=32) == [red]  # one mode: a list of one, same figures
    Mixed.calls = 0
    with pytest.raises(InputError, match="mode must be an integer 0..15"):
        mode_ceiling(Mixed(), [0, 16], pool=80)
    with pytest.raises(InputError, match="non-empty"):
        mode_ceiling(Mixed(), [], pool=80)
    with pytest.raises(InputError, match="batch must be a positive integer"):
        mode_ceiling(Mixed(), 0, pool=80, batch=0)
    assert Mixed.calls == 0


def test_mode_references_bound_a_fine_tune_by_the_data_and_the_autoencoder():
    """mode_references scores other real images of the mode and their autoencoder reconstructions against the
    held-out images: an identity autoencoder scores exactly like the real images, one that blurs (a 5x5 box
    filter, what an averaging model draws) loses precision; the real images sit near a perfect score."""
    import torch
    import torch.nn.functional as F

    from lddgan_core.errors import InputError
    from lddgan_core.eval.evaluate import mode_references

    class AE:
        device = torch.device("cpu")

        def __init__(self, blur):
            self.blur = blur

        def encode(self, x):
            assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32
            return x

        def decode(self, z):
            return F.avg_pool2d(z, 5, 1, 2, count_include_pad=False) if self.blur else z

    real, same = mode_references(AE(False), 0, n_real=48, batch=20)
    assert (real["source"], same["source"], real["mode"], real["n_real"]) == ("real", "autoencoder", 0, 48)
    assert real["precision"] > 0.6 and real["recall"] > 0.6 and real["fid"] < 1
    assert {k: same[k] for k in ("fid", "precision", "recall")} == {k: real[k] for k in ("fid", "precision", "recall")}
    real_b, blurred = mode_references(AE(True), [0], n_real=48)
    assert real_b == real  # the real row does not depend on the autoencoder
    print("real", real["precision"], real["fid"], "blurred", blurred["precision"], blurred["fid"])
    assert blurred["precision"] < real["precision"] - 0.3 and blurred["fid"] > 5 * real["fid"]
    with pytest.raises(InputError, match="mode must be an integer 0..15"):
        mode_references(AE(False), [3, 16])


def test_mode_ceiling_command_refuses_a_bad_mode(capsys):
    from lddgan_core.tools.recipes import main as recipes_main

    assert recipes_main(["mode-ceiling", "--mode", "0,16"]) == 2
    assert "--mode: expected a comma list of integers 0..15, got '0,16'" in capsys.readouterr().err
    assert recipes_main(["mode-ceiling", "--mode", "0", "--pool", "5"]) == 2
    assert "--pool: expected at least 10" in capsys.readouterr().err
