"""LDDGAN Fine-Tune (Weighted Learning), called directly without ComfyUI: a new model (the input untouched)
saved into the model folder, loss-curve and sample-grid IMAGEs, progress with previews, Cancel (a fake
interrupt) keeping a state that the next call resumes to the weights of an uninterrupted run, inference
mode, folders, and clear errors for bad inputs. The shipped 16 px model, a few iterations of batch 2."""
import os
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO))  # nodes/ is not pip-installed: import it from the checkout

import lddgan_core as L  # noqa: E402
import nodes as P  # noqa: E402
from lddgan_core.train import load_state  # noqa: E402
from nodes import finetune as F, runtime  # noqa: E402
from nodes.lib import default_model_path  # noqa: E402

# the shipped 16 px fixture model (random weights): fast, and its sizes are what these tests assert; the
# trained default model is tested in tests/hub/test_default_model.py
SHIPPED = "lddgan_tiny_fixture.safetensors"
assert os.path.isfile(os.path.join(os.path.dirname(default_model_path()), SHIPPED))
STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny ops: threads only add overhead on 2 busy cores. Module scope, so that the module-scoped runs below
    use it too: the thread count changes float sums, and runs are compared bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """$LDDGAN_MODELS_DIR (the save folder outside ComfyUI) for the whole module; runs use distinct names."""
    d = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LDDGAN_MODELS_DIR", str(d))
        yield d


@pytest.fixture(scope="module")
def shipped():
    return P.LDDGANModelLoader().load(SHIPPED)[0]


class Bar:
    """Records what the node reports to ComfyUI's progress bar."""

    def __init__(self, total):
        self.total, self.values, self.previews = total, [], []

    def update_absolute(self, value, total=None, preview=None):
        self.values.append(value)
        self.previews.append(preview)


@pytest.fixture
def bars(monkeypatch):
    made = []
    monkeypatch.setattr(runtime, "progress_bar", lambda total: made.append(Bar(total)) or made[-1])
    return made


def images(n=3, h=20, w=24, seed=0):
    """IMAGE [n, h, w, 3]: smooth colour gradients (not the model's 16 x 16: fit crops and resizes)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    a = torch.rand(n, 1, 1, 3, generator=g)
    return (0.2 + 0.6 * a * x[None, :, :, None] + 0.2 * (1 - a) * y[None, :, :, None]).clamp(0, 1)


def run(model, save, steps=STEPS, imgs=None, folder="", **settings):
    args = dict(steps=steps, batch_size=2, lr_g=5e-5, lr_d=1e-4, schedule="sigmoid", gamma=6.0, r1_gamma=1.0,
                ema_decay=0.999, augment=0, seed=0, save_name=save, save_every=0)
    args.update(settings)
    return P.LDDGANFineTune().finetune(model, images=imgs, folder=folder, **args)


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def base(models_dir, shipped):
    """One uninterrupted run (STEPS iterations) that other tests compare against."""
    return run(shipped, "base", imgs=images())


# -- a normal run ------------------------------------------------------------------------------------------------
def test_registered_and_documented():
    assert P.NODE_CLASS_MAPPINGS["LDDGANFineTune"] is F.LDDGANFineTune
    assert P.NODE_DISPLAY_NAME_MAPPINGS["LDDGANFineTune"] == "LDDGAN Fine-Tune (Weighted Learning)"
    spec = F.LDDGANFineTune.INPUT_TYPES()
    # a seed that changed after every queue would make every run a new, unresumable one
    assert spec["required"]["seed"][1]["control_after_generate"] is False
    assert set(spec["optional"]) == {"images", "folder", "fit"}
    assert F.LDDGANFineTune.OUTPUT_NODE and F.LDDGANFineTune.RETURN_TYPES == ("LDDGAN_MODEL", "IMAGE", "IMAGE")


def test_node_cli_and_library_share_the_fine_tune_defaults():
    """The widgets' defaults, `lddgan finetune`'s and finetune_config()'s are one recipe (the one the README's
    few-image check measured): a creator in ComfyUI and a user of the CLI get the same run."""
    from lddgan_core.tools.cli import build_parser
    from lddgan_core.train import FINETUNE_DEFAULTS, finetune_config

    lib = finetune_config()
    assert (lib.steps, lib.batch_size) == (FINETUNE_DEFAULTS["steps"], FINETUNE_DEFAULTS["batch_size"]) == (1400, 8)
    widgets = {k: v[1]["default"] for k, v in F.LDDGANFineTune.INPUT_TYPES()["required"].items()
               if isinstance(v, tuple) and len(v) > 1 and "default" in v[1]}
    cli = vars(build_parser().parse_args(["finetune", "--data", "d", "--out", "o"]))
    for widget, field, arg in [("steps", "steps", "steps"), ("batch_size", "batch_size", "batch"),
                               ("lr_g", "lr_g", "lr_g"), ("lr_d", "lr_d", "lr_d"),
                               ("schedule", "rec_schedule", "schedule"), ("gamma", "gamma", "gamma"),
                               ("r1_gamma", "r1_gamma", "r1_gamma"), ("ema_decay", "ema_decay", "ema_decay")]:
        assert widgets[widget] == getattr(lib, field) == cli[arg], widget
    assert cli["d_augment"] == lib.d_augment and cli["ema_warmup"] is lib.ema_warmup is True
    # fields without a widget: the node passes finetune_config() the widgets only, so these come from
    # FINETUNE_DEFAULTS on both sides; the CLI's flags must agree too
    for field, arg in [("lazy_reg", "lazy_reg"), ("rec_value", "rec_value"), ("d_warmup", "d_warmup"),
                       ("d_steps", "d_steps"), ("lr_d", "lr_d"), ("rec_t_weights", "rec_t_weights"),
                       ("image_d_weight", "image_d_weight"), ("image_d_ndf", "image_d_ndf")]:
        assert getattr(lib, field) == cli[arg], field
    # and they are the measured recipe (README "Few-image fine-tuning check"), not TrainConfig's official values
    from lddgan_core.train import TrainConfig

    measured = (2e-4, 0.02, 15, "constant", 4.0)
    assert (lib.lr_g, lib.r1_gamma, lib.lazy_reg, lib.rec_schedule, lib.rec_value) == measured
    official = TrainConfig()
    assert all(a != b for a, b in zip(measured[1:], (official.r1_gamma, official.lazy_reg, official.rec_schedule,
                                                     official.rec_value)))  # (lr_g happens to equal TrainConfig's)
    assert lib.rec_t_weights is official.rec_t_weights is None  # L1 at every step (snr>=0.05 measured, not kept)
    assert lib.image_d_weight == "auto" and official.image_d_weight == 0.0  # the image D: for fine-tunes only
    assert F.FINETUNE_REC_VALUE == lib.rec_value  # the schedule tooltip names it


def test_new_model_input_untouched_outputs(models_dir, shipped, bars):
    before = weights(shipped)
    out = run(shipped, "first", imgs=images())
    model, curve, grid = out["result"]
    path = str(models_dir / "first.safetensors")
    assert out["ui"]["text"] == [path]

    assert model is not shipped and isinstance(model, L.LDDGAN)
    assert max_diff(weights(shipped), before) == 0.0  # the input model is untouched
    assert max_diff(weights(model.generator), weights(shipped.generator)) > 1e-6  # trained
    assert max_diff(weights(model.autoencoder), weights(shipped.autoencoder)) == 0.0  # frozen
    assert model.config.provenance["source"] == "finetune" and model.config.provenance["images"] == 3

    # saved into the model folder, where LDDGAN Model Loader lists it
    assert "first.safetensors" in runtime.list_models()
    loaded = P.LDDGANModelLoader().load("first.safetensors")[0]
    assert max_diff(weights(loaded.generator), weights(model.generator)) == 0
    for f in ("first.train.pt", "first.discriminator.safetensors", "first.losses.csv", "first.loss_curve.png"):
        assert (models_dir / f).is_file(), f

    assert curve.shape == (1, 360, 640, 3) and curve.dtype == torch.float32
    assert 0 <= curve.min() and curve.max() <= 1 and curve.std() > 0.05
    # the grid: 16 samples (4 x 4 tiles of 16 px, 2 px gaps) with the seeds LDDGAN Sampler uses for seed 0
    assert grid.shape == (1, 74, 74, 3) and 0 <= grid.min() and grid.max() <= 1
    decoded = P.LDDGANDecode().decode(model, P.LDDGANSampler().sample(model, 0, 16, 1.0)[0])[0]
    tiles = torch.stack([grid[0, 2 + r * 18: 18 + r * 18, 2 + c * 18: 18 + c * 18] for r in range(4) for c in range(4)])
    assert tiles.std() > 0.05
    torch.testing.assert_close(tiles, decoded, rtol=0, atol=1 / 255 + 1e-4)  # uint8 rounding only

    bar = bars[0]  # (the sampler and decoder above made bars of their own)
    assert bar.total == STEPS and bar.values == [1, 2, 3, 4]
    for kind, img, size in bar.previews:  # steps // 20 < 1: a preview after every iteration
        assert kind == "JPEG" and size == 512 and img.mode == "RGB" and img.size == (74, 74)
    np.testing.assert_array_equal(np.asarray(bar.previews[-1][1]), (grid[0].numpy() * 255).round().astype(np.uint8))


# -- Cancel and resume ---------------------------------------------------------------------------------------------
class FakeInterrupt(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


def test_interrupt_keeps_the_state_and_the_next_run_resumes_exactly(models_dir, shipped, base, bars, monkeypatch):
    calls = []

    def cancel_at_2():
        calls.append(bars[-1].values[-1])
        if len(calls) == 2:
            raise FakeInterrupt

    monkeypatch.setattr(runtime, "check_interrupt", cancel_at_2)
    with pytest.raises(FakeInterrupt):
        run(shipped, "cut", imgs=images())
    assert bars[-1].values == [1, 2]
    assert load_state(str(models_dir / "cut.train.pt"))["step"] == 2  # the state after the last iteration
    assert not (models_dir / "cut.safetensors").exists()  # no half-trained model file
    assert "cut.safetensors" not in runtime.list_models()

    monkeypatch.setattr(runtime, "check_interrupt", lambda: None)
    model, curve, grid = run(shipped, "cut", imgs=images())["result"]
    assert bars[-1].values == [3, 4]  # resumed, not restarted
    b_model, b_curve, b_grid = base["result"]
    assert max_diff(weights(model.generator), weights(b_model.generator)) == 0.0  # == the uninterrupted run
    assert torch.equal(grid, b_grid) and torch.equal(curve, b_curve)  # the loss log survived the interruption

    # queued again: the finished run is returned as it is; more steps continue it
    again = run(shipped, "cut", imgs=images())["result"][0]
    assert bars[-1].values == [] and max_diff(weights(again.generator), weights(model.generator)) == 0.0
    longer = run(shipped, "cut", steps=STEPS + 1, imgs=images())["result"][0]
    assert bars[-1].values == [STEPS + 1] and max_diff(weights(longer.generator), weights(model.generator)) > 0


def test_periodic_states(models_dir, shipped, bars, monkeypatch):
    """save_every: a crash (not a clean Cancel) between saves loses at most save_every iterations."""
    seen = []
    monkeypatch.setattr(runtime, "check_interrupt", lambda: seen.append(
        load_state(str(models_dir / "periodic.train.pt"))["step"] if (models_dir / "periodic.train.pt").exists()
        else None))
    run(shipped, "periodic", steps=5, imgs=images(), save_every=2)
    assert seen == [None, 2, 2, 4, 4]  # the final state is written after the last iteration


def test_inside_inference_mode_equals_outside(models_dir, base):
    """ComfyUI calls nodes under torch.inference_mode(); the model and images are inference-mode tensors."""
    with torch.inference_mode():
        m = P.LDDGANModelLoader().load(SHIPPED)[0]
        imgs = images()
        assert imgs.is_inference()
        model, curve, grid = run(m, "inference", imgs=imgs)["result"]
        again = P.LDDGANSampler().sample(model, 0, 2, 1.0)[0]  # the result samples there too
    assert not any(p.is_inference() for p in model.parameters())  # trainable again downstream
    assert max_diff(weights(model.generator), weights(base["result"][0].generator)) == 0.0
    assert torch.equal(grid, base["result"][2]) and again["samples"].shape == (2, 4, 8, 8)


# -- folders -----------------------------------------------------------------------------------------------------
@pytest.fixture
def image_dir(tmp_path):
    from PIL import Image

    d = tmp_path / "input" / "train"
    (d / "sub").mkdir(parents=True)
    for i, a in enumerate(images(3, 20, 24, seed=5)):
        Image.fromarray((a.numpy() * 255).round().astype(np.uint8)).save(d / ("sub" if i else "") / f"{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_and_images_together(models_dir, shipped, image_dir, monkeypatch):
    model = run(shipped, "folder", steps=1, folder=str(image_dir))["result"][0]
    assert model.config.provenance["images"] == 3  # recursive; the .txt file is ignored
    monkeypatch.setattr(runtime, "input_dir", lambda: str(image_dir.parent))  # as in ComfyUI: relative to input/
    both = run(shipped, "both", steps=1, imgs=images(2), folder=' "train" ')["result"][0]
    assert both.config.provenance["images"] == 5


def test_largest_seed_with_augmentation(models_dir, shipped):
    model = run(shipped, "big_seed", steps=1, imgs=images(2), seed=F.MAX_SEED, augment=3)["result"][0]
    assert model.config.provenance["images"] == 6  # 2 images x 3 versions


def test_folder_paths_and_change_detection(tmp_path, image_dir, monkeypatch):
    monkeypatch.setattr(runtime, "input_dir", lambda: str(tmp_path / "input"))
    assert F.image_folder("train") == F.image_folder(f"'{image_dir}'") == str(image_dir)
    assert F.image_folder("  ") is None and F.image_folder(None) is None
    monkeypatch.setattr(runtime, "input_dir", lambda: None)  # outside ComfyUI: the working directory
    monkeypatch.chdir(tmp_path / "input")
    assert F.image_folder("train") == str(image_dir)
    before = F.LDDGANFineTune.IS_CHANGED(folder=str(image_dir), steps=3)
    assert before and before == F.LDDGANFineTune.IS_CHANGED(folder=str(image_dir), steps=3)
    (image_dir / "3.png").write_bytes((image_dir / "0.png").read_bytes())
    assert F.LDDGANFineTune.IS_CHANGED(folder=str(image_dir)) != before  # ComfyUI must not reuse its cached run
    assert F.LDDGANFineTune.IS_CHANGED(folder="") == F.LDDGANFineTune.IS_CHANGED(folder=str(tmp_path / "none")) == ""


# -- bad inputs ----------------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors(models_dir, shipped, tmp_path):
    with pytest.raises(L.InputError, match="images / folder: no training images"):
        run(shipped, "e")
    (tmp_path / "empty").mkdir()
    with pytest.raises(L.InputError, match="has no images .* it is empty"):
        run(shipped, "e", folder=str(tmp_path / "empty"))
    with pytest.raises(L.InputError, match="does not exist"):
        run(shipped, "e", folder=str(tmp_path / "missing"))
    for name in ("../up", "a/b", "", "  "):
        with pytest.raises(L.InputError, match="save_name: .* is not a plain file name"):
            run(shipped, name, imgs=images())
    for field in ("steps", "batch_size"):
        with pytest.raises(L.InputError, match=f"{field}: expected an integer >= 1, got 0"):
            run(shipped, "e", imgs=images(), **{field: 0})
    with pytest.raises(L.InputError, match="save_every: expected an integer >= 0"):
        run(shipped, "e", imgs=images(), save_every=-1)
    with pytest.raises(L.InputError, match="seed: expected at most"):
        run(shipped, "e", imgs=images(), seed=F.MAX_SEED + 1)
    with pytest.raises(L.InputError, match="schedule: expected one of"):
        run(shipped, "e", imgs=images(), schedule="exp")
    with pytest.raises(L.InputError, match="fit: expected one of"):
        run(shipped, "e", folder=str(tmp_path / "empty"), fit="stretch")
    with pytest.raises(L.InputError, match=r"images: 24x20 px, but this model trains on 16x16"):
        run(shipped, "e", imgs=images(), fit="error")
    with pytest.raises(L.InputError, match=r"images: expected an IMAGE tensor \[B, H, W, 3\]"):
        run(shipped, "e", imgs={"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(L.InputError, match="model: expected an LDDGAN_MODEL"):
        run({"samples": 0}, "e", imgs=images())
    assert not any(p.name.startswith("e.") for p in models_dir.iterdir())  # nothing written for any of them


def test_never_replaces_a_model_it_did_not_write(models_dir, shipped, random_model):
    mine = models_dir / "mine.safetensors"
    random_model("kl").save(mine)
    before = mine.read_bytes()
    with pytest.raises(L.InputError, match="mine.safetensors already exists and is not a fine-tune run"):
        run(shipped, "mine", imgs=images())
    assert mine.read_bytes() == before
    with pytest.raises(L.InputError, match="another model folder"):  # would hide the shipped model
        run(shipped, os.path.splitext(SHIPPED)[0], imgs=images())


def test_changed_settings_name_the_run_to_resume(models_dir, shipped, base):
    with pytest.raises(L.CheckpointError, match=r"save_name 'base': the earlier run .* cannot be resumed .*lr_g"):
        run(shipped, "base", imgs=images(), lr_g=1e-3)
    with pytest.raises(L.CheckpointError, match="different images"):
        run(shipped, "base", imgs=images(seed=9))
    assert load_state(str(models_dir / "base.train.pt"))["step"] == STEPS  # left as it was


def test_training_makes_room_on_an_accelerator(monkeypatch):
    """As ComfyUI's own training node: every other model is unloaded first, on a GPU only."""
    calls = []

    class FakeMM:
        def unload_all_models(self):
            calls.append("unload")

        def soft_empty_cache(self):
            calls.append("empty")

    monkeypatch.setattr(runtime, "_mm", lambda: FakeMM())
    runtime.make_room_for_training(torch.device("cpu"))
    assert calls == []
    runtime.make_room_for_training(torch.device("cuda", 0))
    assert calls == ["unload", "empty"]


def test_resumes_a_run_saved_under_older_defaults(models_dir, shipped, bars, monkeypatch):
    """Settings without a widget (lazy_reg, rec_value) come from FINETUNE_DEFAULTS; when those change, re-queueing
    a save_name saved under the old ones continues its run with the saved values instead of refusing it."""
    import lddgan_core.train.api as api

    with monkeypatch.context() as m:  # the run as an older version of the pack made it
        m.setitem(api.FINETUNE_DEFAULTS, "lazy_reg", 10)
        m.setitem(api.FINETUNE_DEFAULTS, "rec_value", 1.0)
        run(shipped, "older", steps=2, imgs=images())
    state = models_dir / "older.train.pt"
    assert load_state(str(state))["step"] == 2
    run(shipped, "older", steps=4, imgs=images())  # today's defaults: lazy_reg 15, rec_value 4
    st = load_state(str(state))
    assert st["step"] == 4
    assert '"lazy_reg": 10' in st["train_config"] and '"rec_value": 1.0' in st["train_config"]
    with pytest.raises(L.CheckpointError, match="r1_gamma 1.0 -> 2.0"):  # a changed widget is still refused
        run(shipped, "older", steps=6, imgs=images(), r1_gamma=2.0)
