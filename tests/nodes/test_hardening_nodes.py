"""Issue 14, items 8-13 and 15, on the nodes (without ComfyUI): Fine-Tune's folder confined, path lengths checked
before work, a run lock, temporary files never listed and cleaned up, Save Model re-runs when its file is gone,
Encode refuses what cannot fit and bad IMAGE values, CPU out-of-memory recognised."""
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO))

import lddgan_core as L  # noqa: E402
import nodes as P  # noqa: E402
from lddgan_core import atomic as LIO  # noqa: E402
from lddgan_core.train import RunPaths  # noqa: E402
from nodes import chunks, finetune as F, runtime  # noqa: E402

SHIPPED = "lddgan_tiny_fixture.safetensors"


@pytest.fixture(scope="module")
def shipped():
    return P.LDDGANModelLoader().load(SHIPPED)[0]


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(d))
    return d


def images(n=2, h=16, w=16):
    return torch.linspace(0.1, 0.9, n * h * w * 3).reshape(n, h, w, 3)


def finetune(model, save, **kw):
    args = dict(steps=1, batch_size=2, lr_g=5e-5, lr_d=1e-4, schedule="sigmoid", gamma=6.0, r1_gamma=1.0,
                ema_decay=0.999, augment=0, seed=0, save_name=save, save_every=0)
    args.update(kw)
    return P.LDDGANFineTune().finetune(model, **args)


# ---------------------------------------------------------------------------------------------- item 8
@pytest.fixture
def comfy_input(tmp_path, monkeypatch):
    """As inside ComfyUI: an input folder with a folder of images, and a secret folder outside it."""
    from PIL import Image

    inp = tmp_path / "input"
    (inp / "train").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(inp / "train" / f"{i}.png")
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (16, 16)).save(secret / "private.png")
    monkeypatch.setattr(runtime, "input_dir", lambda: str(inp))
    return inp, secret


@pytest.mark.parametrize("given", ["/etc", "../secret", "../..", "{secret}", "/nonexistent_dir_xyz", "train/../../secret"])
def test_finetune_folder_outside_input_refused_revealing_nothing(comfy_input, given):
    inp, secret = comfy_input
    folder = given.format(secret=secret)
    with pytest.raises(L.InputError) as e:
        F.image_folder(folder)
    msg = str(e.value)
    assert "is not inside ComfyUI's input folder" in msg
    # no resolved path, listing or file name of the outside (only the user's own input is echoed)
    assert "private.png" not in msg and str(secret) not in msg.replace(repr(folder), "")
    assert F.LDDGANFineTune.IS_CHANGED(folder=folder) == ""  # nothing about the outside through the cache key


def test_finetune_folder_error_identical_for_existing_and_missing(comfy_input):
    msgs = []
    for f in ("/etc", "/nonexistent_dir_xyz"):
        with pytest.raises(L.InputError) as e:
            F.image_folder(f)
        msgs.append(str(e.value).replace(repr(f), "<X>"))
    assert msgs[0] == msgs[1]


def test_finetune_folder_symlink_out_of_input_refused(comfy_input):
    inp, secret = comfy_input
    (inp / "link").symlink_to(secret, target_is_directory=True)
    with pytest.raises(L.InputError, match="not inside ComfyUI's input folder"):
        F.image_folder("link")
    assert F.image_folder("train") == str(inp / "train")
    assert F.image_folder(str(inp / "train")) == str(inp / "train")


def test_finetune_folder_extra_training_root(comfy_input, monkeypatch):
    """Folders listed under lddgan_training in extra_model_paths.yaml are allowed too."""
    inp, secret = comfy_input
    fp = types.SimpleNamespace(folder_names_and_paths={"lddgan_training": ([str(secret)], set())},
                               get_folder_paths=lambda key: [str(secret)])
    monkeypatch.setattr(runtime, "_folder_paths", lambda: fp)
    assert F.image_folder(str(secret)) == str(secret)
    with pytest.raises(L.InputError, match="not inside"):
        F.image_folder("/etc")


# ---------------------------------------------------------------------------------------------- item 9
def test_finetune_name_too_long_refused_before_training(models_dir, shipped, monkeypatch):
    name_max = os.pathconf(str(models_dir), "PC_NAME_MAX")
    called = []
    monkeypatch.setattr(F, "_train", lambda: types.SimpleNamespace(
        RunPaths=RunPaths, finetune=lambda *a, **k: called.append(1)))
    for n in (name_max - 24, name_max - 12):  # 231..243 characters on ext4: the name check passes, the temp name cannot
        with pytest.raises(L.InputError, match="save_name: the name is too long for this file system"):
            finetune(shipped, "a" * n, images=images())
    assert not called and not os.listdir(models_dir)


def test_save_model_name_too_long_refused_before_writing(models_dir, shipped):
    name_max = os.pathconf(str(models_dir), "PC_NAME_MAX")
    with pytest.raises(L.InputError, match="filename: the name is too long"):
        P.LDDGANSaveModel().save(shipped, "b" * (name_max - 15), overwrite=False)
    assert not os.listdir(models_dir)
    ok = "c" * (name_max - len(".tmp-") - 8 - len(".safetensors"))  # the longest name that fits, temp name included
    path = P.LDDGANSaveModel().save(shipped, ok, overwrite=False)["result"][0]
    assert os.path.isfile(path)


# ---------------------------------------------------------------------------------------------- item 10
def _hold_lock(lock_path):
    code = ("import sys, time\nfrom lddgan_core.runlock import run_lock\n"
            f"with run_lock({str(lock_path)!r}, 'x'):\n    print('locked', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_finetune_with_same_name_refused_while_first_runs(models_dir, shipped):
    path = os.path.join(str(models_dir), "same.safetensors")
    holder = _hold_lock(F.LDDGANFineTune.lock_path(path))  # a first run in another process
    try:
        with pytest.raises(L.InputError, match=rf"save_name 'same': another run is writing it right now "
                                                 rf"\(process {holder.pid}\)"):
            finetune(shipped, "same", images=images())
        assert not os.path.exists(path)
    finally:
        holder.send_signal(signal.SIGKILL)  # the first run dies without cleaning up
        holder.wait(timeout=30)
    out = finetune(shipped, "same", images=images())  # the dead run's lock does not block
    assert os.path.isfile(out["ui"]["text"][0])
    assert not os.path.exists(F.LDDGANFineTune.lock_path(path))  # released and removed when the run ends


def test_stale_lock_file_of_dead_process_does_not_block(models_dir, shipped):
    path = os.path.join(str(models_dir), "stale.safetensors")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pathlib.Path(F.LDDGANFineTune.lock_path(path)).write_text(dead.stdout.strip())
    out = finetune(shipped, "stale", images=images())
    assert os.path.isfile(out["ui"]["text"][0])


# ---------------------------------------------------------------------------------------------- item 11
def test_temp_files_never_listed_and_cleaned_on_next_save(models_dir, shipped):
    stale = models_dir / ".tmp-abcd1234kept.safetensors"
    fresh = models_dir / ".tmp-zz99yy88kept.safetensors"
    other = models_dir / ".tmp-abcd1234other.safetensors"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - 2 * LIO.STALE_TMP_SECONDS
    for p in (stale, other):
        os.utime(p, (old, old))
    names = runtime.list_models()
    assert not [n for n in names if ".tmp-" in n]
    P.LDDGANSaveModel().save(shipped, "kept", overwrite=False)
    assert not stale.exists()  # a killed save of this file: removed
    assert fresh.exists()  # may belong to a save still running elsewhere: kept
    assert other.exists()  # belongs to another file's save
    assert "kept.safetensors" in runtime.list_models()


def test_temp_files_hidden_inside_comfyui_listing(monkeypatch):
    fp = types.SimpleNamespace(folder_names_and_paths={runtime.FOLDER: ([], set())},
                               get_filename_list=lambda key: ["a.safetensors", ".tmp-x1y2z3w4a.safetensors",
                                                              "sub/.tmp-abcdefghb.safetensors"])
    monkeypatch.setattr(runtime, "_folder_paths", lambda: fp)
    assert runtime.list_models() == ["a.safetensors"]


# ---------------------------------------------------------------------------------------------- item 12
def test_save_model_reruns_when_its_file_was_deleted(models_dir, shipped):
    S = P.LDDGANSaveModel
    first = S.IS_CHANGED(filename="again")
    path = S().save(shipped, "again", overwrite=False)["result"][0]
    assert S.IS_CHANGED(filename="again") == first  # written: ComfyUI's cached result stays valid
    os.unlink(path)
    gone = S.IS_CHANGED(filename="again")
    assert gone != first  # deleted: ComfyUI must run the node again ...
    S().save(shipped, "again", overwrite=False)
    assert os.path.isfile(path)  # ... and the file is back
    assert S.IS_CHANGED(filename="again") == gone


# ---------------------------------------------------------------------------------------------- item 13
def test_encode_refuses_image_that_cannot_fit(shipped):
    avail = runtime.available_memory(runtime.compute_device())
    assert avail and avail > 0
    side = 16
    while chunks.encode_bytes(shipped, side, side) <= 2 * avail:
        side *= 2
    img = torch.full((1, 1, 1, 3), 0.5).expand(1, side, side, 3)  # no memory behind it
    t = time.time()
    with pytest.raises(L.InputError, match=rf"image: {side}x{side} px needs about .* GiB to encode.*available"):
        P.LDDGANEncode().encode(shipped, img, "error")
    assert time.time() - t < 20


@pytest.mark.parametrize("message", [
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate 4096 bytes.",
    "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes. Error code 12 (Cannot "
    "allocate memory)",
])
def test_cpu_out_of_memory_halves_and_retries(message):
    sizes = []

    def fn(a, b):
        sizes.append(b - a)
        if b - a > 2:
            raise RuntimeError(message)
        return torch.arange(a, b)

    out = chunks.run_chunked(8, 8, fn)
    assert out.tolist() == list(range(8)) and sizes[:3] == [8, 4, 2]
    assert runtime.is_oom(RuntimeError(message)) and not runtime.is_oom(RuntimeError("shape mismatch"))


# ---------------------------------------------------------------------------------------------- item 15
@pytest.mark.parametrize("image,expect", [
    (torch.zeros(0, 16, 16, 3), "the batch is empty"),
    (torch.zeros(1, 0, 16, 3), "zero size"),
    (torch.zeros(2, 16, 0, 3), "zero size"),
    (torch.full((1, 16, 16, 3), 200.0), r"values range from 200 to 200, but IMAGE values must be 0\.\.1 \(0\.\.255"),
    (torch.full((1, 16, 16, 3), -1.0), r"values range from -1 to -1"),
    (torch.full((1, 16, 16, 3), float("nan")), "NaN"),
])
def test_encode_bad_images_clear_errors(shipped, image, expect):
    with pytest.raises(L.InputError, match=expect):
        P.LDDGANEncode().encode(shipped, image, "error")


def test_encode_accepts_small_resampling_overshoot(shipped):
    img = images(1).clone()
    img[0, 0, 0, 0], img[0, 1, 1, 1] = 1.03, -0.02  # a bicubic upscale overshoots a little: clamped as before
    lat = P.LDDGANEncode().encode(shipped, img, "error")[0]["samples"]
    assert lat.shape[0] == 1 and bool(torch.isfinite(lat).all())
