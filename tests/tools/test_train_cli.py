"""`lddgan finetune`, `lddgan train-autoencoder`, `lddgan train`: run folders, logs, grids, resume, errors."""
import csv
import io
import json
import os
import signal
import threading

import numpy as np
import pytest
from PIL import Image

import lddgan_core as L
from lddgan_core.tools.cli import main
from lddgan_core.train import load_state
from lddgan_core.tools.progress import ProgressBar
from lddgan_core.tools.train_cli import StopFlag

TINY_D = json.dumps({"kind": "small", "ngf": 8, "t_emb_dim": 16})


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    (d / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        a = np.zeros((18, 22, 3), np.uint8) + rng.integers(20, 230, 3).astype(np.uint8)
        a[:, : 3 + 2 * i] = 250
        Image.fromarray(a).save(d / ("nested" if i % 2 else "") / f"x{i}.{'png' if i % 2 else 'jpg'}")
    return d


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_finetune_run_folder_and_resume(tmp_path, image_dir, random_model, capsys):
    model = random_model("kl").save(tmp_path / "base.safetensors")
    run = tmp_path / "run"
    args = ["finetune", "--model", str(model), "--data", str(image_dir), "--out", str(run), "--batch", "2",
            "--log-every", "2", "--sample-every", "3", "--save-every", "3", "--num-samples", "4",
            "--disc-config", TINY_D, "--device", "cpu", "-q", "--schedule", "sigmoid"]  # (default: constant)
    assert main(args + ["--steps", "6"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "model.safetensors")
    for f in ("model.safetensors", "discriminator.safetensors", "train_state.pt", "losses.csv", "loss_curve.png",
              "train_config.json", "samples/step_0000003.png", "samples/step_0000006.png"):
        assert (run / f).is_file(), f
    log = rows(run / "losses.csv")
    assert [r["step"] for r in log] == ["2", "4", "6"]
    assert all(np.isfinite(float(r[k])) for r in log for k in ("d_loss", "g_adv", "rec", "w"))
    assert float(log[0]["w"]) > 0.9 > 0.01 > float(log[-1]["w"])  # sigmoid schedule over the run
    assert Image.open(run / "loss_curve.png").size == (640, 360)
    assert Image.open(run / "samples/step_0000006.png").size == (2 + 2 * 18, 2 + 2 * 18)  # 2x2 grid of 16 px, 2 px gaps
    m = L.load(run / "model.safetensors")
    assert m.config.provenance["source"] == "finetune" and m.config.provenance["images"] == 5
    cfg = json.loads((run / "train_config.json").read_text())
    assert cfg["train"]["steps"] == 6 and cfg["images"] == 5

    assert main(args + ["--steps", "8"]) == 0  # resumes at 6
    assert [r["step"] for r in rows(run / "losses.csv")] == ["2", "4", "6", "8"]
    assert load_state(str(run / "train_state.pt"))["step"] == 8
    assert main(args + ["--steps", "8", "--lr-g", "1e-3"]) == 2  # changed settings: refused, explained
    assert "lr_g 0.0002 -> 0.001" in capsys.readouterr().err
    assert main(args + ["--steps", "2", "--restart"]) == 0
    assert [r["step"] for r in rows(run / "losses.csv")] == ["2"]
    assert len([f for f in os.listdir(run) if f.startswith("train_state.") and f != "train_state.pt"]) == 1  # backup


def test_folder_errors(tmp_path, image_dir, random_model, capsys):
    model = str(random_model("kl").save(tmp_path / "base.safetensors"))
    (tmp_path / "empty").mkdir()
    base = ["finetune", "--model", model, "--out", str(tmp_path / "r"), "--steps", "1", "--batch", "2", "-q"]
    assert main(base + ["--data", str(tmp_path / "empty")]) == 2
    assert "has no images" in capsys.readouterr().err
    (image_dir / "broken.png").write_bytes(b"\x89PNG but not really")
    (image_dir / "nested" / "cut.jpg").write_bytes(b"")
    assert main(base + ["--data", str(image_dir)]) == 2
    err = capsys.readouterr().err
    assert "2 of 7 image file(s) could not be read" in err and "broken.png: not a readable image" in err
    assert "cut.jpg" in err
    assert main(base + ["--data", str(image_dir), "--skip-bad-images", "--disc-config", TINY_D]) == 0


def test_train_autoencoder_then_train(tmp_path, image_dir, capsys):
    ae_run, g_run = tmp_path / "ae", tmp_path / "g"
    assert main(["train-autoencoder", "--preset", "tiny", "--image-size", "16", "--data", str(image_dir), "--out",
                 str(ae_run), "--steps", "3", "--batch", "2", "--log-every", "1", "--num-samples", "2",
                 "--disc-weight", "0.5", "--disc-layers", "2", "--device", "cpu", "-q"]) == 0
    assert [r["step"] for r in rows(ae_run / "losses.csv")] == ["1", "2", "3"]
    assert (ae_run / "autoencoder.safetensors").is_file() and (ae_run / "samples" / "step_0000003.png").is_file()
    assert main(["train", "--autoencoder", str(ae_run / "autoencoder.safetensors"), "--generator", "tiny",
                 "--timesteps", "2", "--data", str(image_dir), "--out", str(g_run), "--steps", "3", "--batch", "2",
                 "--disc-config", TINY_D, "--device", "cpu", "-q"]) == 0
    m = L.load(g_run / "model.safetensors")
    assert m.num_timesteps == 2 and m.config.provenance["source"] == "train"
    assert m.scale_factor == json.loads((g_run / "train_config.json").read_text())["model"]["scale_factor"]
    assert m.generate(2, seed=0).shape == (2, 3, 16, 16)
    capsys.readouterr()
    assert main(["sample", "--model", str(g_run / "model.safetensors"), "--batch", "2", "--grid",
                 str(tmp_path / "s.png")]) == 0
    assert main(["train", "--autoencoder", str(ae_run / "autoencoder.safetensors"), "--generator", "{\"nf\": 6}",
                 "--data", str(image_dir), "--out", str(tmp_path / "bad"), "--steps", "1", "-q"]) == 2
    assert "multiples of 4" in capsys.readouterr().err


def test_progress_bar_and_stop_flag():
    out = io.StringIO()
    bar = ProgressBar("steps", every=2, stream=out)
    for s in range(1, 5):
        bar(s, 4, {"d_loss": 1.25, "g_adv": 0.7, "rec": 0.1, "w": 0.5})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("[" + "#" * 24 + "] 4/4 100%") and "rec 0.1 w 0.5" in lines[-1]
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")
    with StopFlag() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)  # first Ctrl-C: stop after this iteration
        assert stop()
        with pytest.raises(KeyboardInterrupt):  # second: now
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not stop._handler


def test_finetune_resumes_a_run_started_under_older_defaults(tmp_path, image_dir, random_model, capsys):
    """A run saved with other values of fields the user did not give (as after FINETUNE_DEFAULTS changed: lazy_reg
    10, rec_value 1, sigmoid) continues with its saved values when the same command is run again; a value given on
    the command line is still compared and a change refused."""
    from lddgan_core.train import finetune_config, keep_saved_settings

    model = random_model("kl").save(tmp_path / "base.safetensors")
    run = tmp_path / "run"
    args = ["finetune", "--model", str(model), "--data", str(image_dir), "--out", str(run), "--batch", "2",
            "--disc-config", TINY_D, "--device", "cpu", "-q", "--save-every", "2"]
    old = ["--lazy-reg", "10", "--rec-value", "1", "--schedule", "sigmoid"]
    assert main(args + old + ["--steps", "2"]) == 0
    capsys.readouterr()
    assert main([x for x in args if x != "-q"] + ["--steps", "4"]) == 0  # defaults now: lazy_reg 15, constant 4
    err = capsys.readouterr().err
    assert "lazy_reg 10 (default now 15)" in err and "rec_schedule 'sigmoid'" in err and "rec_value 1.0" in err
    state = load_state(str(run / "train_state.pt"))
    assert state["step"] == 4
    saved = json.loads(state["train_config"])
    assert (saved["lazy_reg"], saved["rec_value"], saved["rec_schedule"]) == (10, 1.0, "sigmoid")
    assert float(rows(run / "losses.csv")[-1]["w"]) < 0.5  # the sigmoid schedule went on (constant 4 would be 4)
    assert main(args + ["--steps", "6", "--lazy-reg", "20"]) == 2  # given: compared, refused
    assert "lazy_reg 10 -> 20" in capsys.readouterr().err

    # the library rule itself: given fields and fields off their default are left alone; no state, no change
    cfg = finetune_config()
    same, taken = keep_saved_settings(cfg, finetune_config(), str(run / "train_state.pt"), given={"lazy_reg"})
    assert same.lazy_reg == 15 and same.rec_value == 1.0 and "lazy_reg" not in taken
    off = finetune_config(rec_value=2.0)
    assert keep_saved_settings(off, finetune_config(), str(run / "train_state.pt"))[0].rec_value == 2.0
    assert keep_saved_settings(cfg, finetune_config(), str(tmp_path / "none.pt")) == (cfg, {})


def test_finetune_rec_t_weights_flag(tmp_path, image_dir, random_model, capsys):
    """--rec-t-weights reaches the run's TrainConfig; a malformed list or the wrong number of steps is refused with
    a message naming the flag or field, and no run folder state is written."""
    model = str(random_model("kl").save(tmp_path / "base.safetensors"))
    T = L.load(model).num_timesteps
    base = ["finetune", "--model", model, "--data", str(image_dir), "--steps", "1", "--batch", "2", "-q",
            "--disc-config", TINY_D, "--device", "cpu"]
    w = ",".join(["1"] + ["0"] * (T - 1))
    assert main(base + ["--out", str(tmp_path / "ok"), "--rec-t-weights", w]) == 0
    cfg = json.loads((tmp_path / "ok" / "train_config.json").read_text())
    assert cfg["train"]["rec_t_weights"] == [1.0] + [0.0] * (T - 1)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "bad"), "--rec-t-weights", "1,x"])
    assert "expected comma-separated numbers" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "rule"), "--rec-t-weights", "min_snr"]) == 0
    assert json.loads((tmp_path / "rule" / "train_config.json").read_text())["train"]["rec_t_weights"] == "min_snr"
    assert main(base + ["--out", str(tmp_path / "short"), "--rec-t-weights", "1"]) == 2
    assert "rec_t_weights: expected one factor per diffusion step" in capsys.readouterr().err
    assert not (tmp_path / "short" / "train_state.pt").exists()
