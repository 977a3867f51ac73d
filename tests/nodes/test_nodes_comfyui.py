"""Integration test against a real ComfyUI: $COMFYUI_DIR names a ComfyUI checkout, by default ../shared/comfyui
beside the repository (CI has it; skipped when neither is there); $COMFYUI_PYTHON: the interpreter with ComfyUI's
requirements, default this one.

ComfyUI is started headless on 127.0.0.1 on the CPU with this pack linked into a temporary base
directory's custom_nodes/. Checked: /object_info lists the nodes with tooltips; every API workflow and every
editor-format example (converted with /object_info) runs, and its images come back through /view with the
right shape, not constant, and pixel-identical for the same seed; LDDGAN VAE gives core VAE Decode /
Encode the results of LDDGAN Decode / Encode (explicit-config f=2 and auto-detected KL-f8); LDDGAN
latents survive the core latent nodes; LDDGAN Fine-Tune stopped by Cancel (POST /interrupt) keeps its state and,
queued again, resumes to the weights of an uninterrupted run; bad inputs come back as node errors with a clear
message while the server keeps serving. The server runs with one torch thread unless $OMP_NUM_THREADS is set.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest -q tests/nodes/test_nodes_comfyui.py
"""
import json
import os
import pathlib
import shutil
import sys
import time
import urllib.parse

import numpy as np
import pytest
import torch

import lddgan_core as L

from conftest import REPO, TESTS

sys.path[:0] = [str(REPO / "tools")]
import build_workflows as B  # noqa: E402  tools/build_workflows.py
import comfy_workflow as CW  # noqa: E402
from comfy_server import ComfyServer, comfyui_dir, error_of, make_input_folder  # noqa: E402
from conftest import tiny_config  # noqa: E402

COMFYUI_DIR = comfyui_dir()
if not COMFYUI_DIR:  # one skip for the module, its reason printed in the summary (-rs in pyproject.toml)
    pytest.skip("no ComfyUI: COMFYUI_DIR is not set and ../shared/comfyui is absent, so the real-ComfyUI "
                "integration test is skipped (set COMFYUI_DIR to a ComfyUI checkout and COMFYUI_PYTHON to a Python "
                "with its requirements to run it)", allow_module_level=True)

SHIPPED = "lddgan_tiny_fixture.safetensors"  # shipped 16 px fixture model: fast; the examples use B.SHIPPED
OURS = ["LDDGANModelLoader", "LDDGANSampler", "LDDGANEncode", "LDDGANDecode", "LDDGANSaveModel", "LDDGANVAE",
        "LDDGANFineTune"]
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))


def kl_f8_model() -> L.LDDGAN:
    """LDM KL-f8 in Stable Diffusion's layout (what ComfyUI auto-detects), a tiny generator: 32 px images."""
    torch.manual_seed(0)
    gen = L.GeneratorConfig(in_channels=4, image_size=4, nf=8, ch_mult=(1, 2), num_res_blocks=1,
                            attn_resolutions=(2,), nz=6, z_emb_dim=12, n_mlp=1)
    ae = L.AutoencoderConfig(kind="kl", embed_dim=4, z_channels=4)  # ch 128, ch_mult (1,2,4,4), 2 blocks, no attn
    cfg = L.ModelConfig(generator=gen, autoencoder=ae, diffusion=L.DiffusionConfig(num_timesteps=2),
                        scale_factor=1.0, image_size=32, name="test_kl_f8")
    return L.LDDGAN(cfg).eval()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    models = base / "models" / "lddgan"
    models.mkdir(parents=True)
    kl_f8_model().save(models / "test_kl_f8.safetensors", dtype="fp16")
    torch.manual_seed(0)
    L.LDDGAN(tiny_config("vq")).save(models / "test_vq.safetensors")
    extra = base / "elsewhere" / "lddgan_models"  # a folder reached through extra_model_paths.yaml
    extra.mkdir(parents=True)
    torch.manual_seed(1)
    L.LDDGAN(tiny_config("kl")).save(extra / "from_yaml.safetensors")
    (base / "extra_model_paths.yaml").write_text(f"test:\n  base_path: {base / 'elsewhere'}\n  lddgan: lddgan_models\n")
    make_input_folder(base, COMFYUI_DIR, B.example_png)
    # One torch thread unless $OMP_NUM_THREADS says otherwise: the models here are tiny, and on a busy 2-core
    # machine two threads made fine-tuning them 30-50 times slower (threads waiting for each other's core).
    srv = ComfyServer(COMFYUI_DIR, os.environ.get("COMFYUI_PYTHON") or sys.executable, str(base), str(REPO),
                      extra_args=["--extra-model-paths-config", str(base / "extra_model_paths.yaml")],
                      env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def info(server):
    return server.get_json("/object_info")


def _ok(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(error_of(entry))[:3000]
    return entry


def _api(name):
    return json.loads((TESTS / "workflows" / f"{name}.api.json").read_text())


def N(class_type, **inputs):
    """One API-format node."""
    return {"class_type": class_type, "inputs": inputs}


def _strip_meta(api):
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in api.items()}


def _check_images(arr, n, size):
    assert arr.shape == (n, size, size, 3) and arr.dtype == np.uint8
    for a in arr:
        assert a.std() > 5, "a constant image"


def _latent_file(server, entry, node):
    f = entry["outputs"][node]["latents"][0]
    return os.path.join(server.base, "output", f["subfolder"], f["filename"])


# -- registration --------------------------------------------------------------------------------------------
def test_object_info_lists_the_nodes_with_tooltips(info):
    for name in OURS:
        e = info[name]
        assert e["category"] == "LDDGAN" and len(e["description"]) > 40 and e["display_name"].startswith("LDDGAN ")
        assert len(e["output_tooltips"]) == len(e["output"]) and all(e["output_tooltips"])
        for group in ("required", "optional"):
            for inp, spec in e["input"].get(group, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{inp}"
    names = info["LDDGANModelLoader"]["input"]["required"]["model_name"][0]
    assert {SHIPPED, B.SHIPPED, "test_kl_f8.safetensors", "test_vq.safetensors", "from_yaml.safetensors"} <= set(names)
    assert info["LDDGANSampler"]["input"]["required"]["seed"][1]["control_after_generate"] is True
    # a training seed must not change by itself after each queue (a run is resumed only with the same seed)
    assert info["LDDGANFineTune"]["input"]["required"]["seed"][1]["control_after_generate"] is False
    assert info["LDDGANFineTune"]["output_node"] is True


def test_template_browser_serves_the_examples(server):
    listed = server.get_json("/api/workflow_templates")
    assert sorted(listed["ComfyUI-LDDGAN"]) == sorted(p.stem for p in EXAMPLES)  # the card titles
    for p in EXAMPLES:
        served = server.get_json(f"/api/workflow_templates/ComfyUI-LDDGAN/{urllib.parse.quote(p.name)}")
        assert served == json.loads(p.read_text())
        status, body = server._request(f"/api/workflow_templates/ComfyUI-LDDGAN/{urllib.parse.quote(p.stem)}.jpg")
        assert status == 200 and body == p.with_suffix(".jpg").read_bytes()


def test_models_from_extra_model_paths_load(server):
    prompt = {"1": N("LDDGANModelLoader", model_name="from_yaml.safetensors"),
              "2": N("LDDGANSampler", model=["1", 0], seed=0, batch_size=2, denoise=1.0),
              "3": N("LDDGANDecode", model=["1", 0], latent=["2", 0]),
              "4": N("SaveImage", images=["3", 0], filename_prefix="yaml")}
    _check_images(server.images(_ok(server, prompt))["4"], 2, 16)


def test_offline_core_node_specs_match_comfyui(info):
    """The stand-in /object_info used offline (tools/comfy_workflow.py) agrees with the real one."""
    for name, ours in CW.CORE_OBJECT_INFO.items():
        real = info[name]
        assert [g for g in ours["input_order"]] == [g for g in real["input_order"] if g != "hidden"]
        assert [(n, CW._extra_slots(s)) for n, s in CW.widget_inputs(ours)] == \
            [(n, CW._extra_slots(s)) for n, s in CW.widget_inputs(real)], name
        assert ours["output"] == real["output"], name


# -- example workflows ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_workflows_run_and_repeat(server, info, path):
    key = B.ID[path.stem]  # the example's id; its API twin is tests/workflows/<id>.api.json
    api = _api(key)
    first = server.images(_ok(server, api))
    ui = json.loads(path.read_text())
    ui_api = CW.ui_to_api(ui, info)  # conversion with the real /object_info
    assert _strip_meta(ui_api) == _strip_meta(api)
    for node in ui_api.values():  # an equivalent input (fp32 is what auto means on the CPU) so that
        if node["class_type"] == "LDDGANModelLoader":  # ComfyUI recomputes everything instead of serving its cache
            node["inputs"]["precision"] = "fp32"
    second = server.images(_ok(server, ui_api))
    assert first.keys() == second.keys() and first
    for nid in first:
        assert np.array_equal(first[nid], second[nid]), f"{path.stem}: same seed, different pixels"
    # 32 px outputs are previewed 4x larger (Upscale Image By, nearest-exact), and saved at their true size
    saves = [str(n["id"]) for n in ui["nodes"] if n["type"] == "SaveImage"]
    src = {str(n): str(a) for _l, a, _s, n, _t, _ty in ui["links"]}  # (one input each) node -> its source node
    enlarged = [(str(n["id"]), src[str(n["id"])]) for n in ui["nodes"] if n["type"] == "PreviewImage"
                and api[src[str(n["id"])]]["class_type"] == "ImageScaleBy"]
    # (the emoji model's 64 px pictures are shown as they are)
    assert enlarged or key in ("lddgan_finetune", "lddgan_emoji_variations", "lddgan_emoji_image_to_image"), key
    for preview, up in enlarged:
        (save,) = [s_ for s_ in saves if src[s_] == src[up]]  # the Save Image of the same decoded images
        assert api[up]["inputs"]["upscale_method"] == "nearest-exact" and api[up]["inputs"]["scale_by"] == 4.0
        assert np.array_equal(first[preview], first[save].repeat(4, axis=1).repeat(4, axis=2)), (preview, save)
    if key == "lddgan_generate":
        _check_images(first["4"], 8, 32)
    elif key == "lddgan_image_to_image":
        (out,) = (first[s_] for s_ in saves)
        _check_images(out, 4, 32)
        assert min(np.abs(out[i].astype(int) - out[j]).max() for i in range(4) for j in range(i)) > 0
    elif key == "lddgan_finetune":  # the second run resumed the finished run: the same model
        _check_images(first["6"], 4, 32)
        assert first["7"].shape == (1, 360, 640, 3) and first["7"].std() > 5  # loss curve
        _check_images(first["8"], 1, 138)  # sample grid
        name = B.FINETUNE_NAME + ".safetensors"
        assert os.path.isfile(os.path.join(server.base, "models", "lddgan", name))
        loader = server.get_json("/object_info/LDDGANModelLoader")["LDDGANModelLoader"]
        assert name in loader["input"]["required"]["model_name"][0]
    elif key == "lddgan_emoji_variations":
        new, var = (first[s_] for s_ in saves)
        _check_images(new, 4, 64)
        _check_images(var, 4, 64)
        rms = lambda a, b: np.sqrt(((a.astype(float) - b) ** 2).mean())  # noqa: E731
        assert max(rms(v, new[0]) for v in var) < np.mean([rms(n, new[0]) for n in new[1:]])  # near the varied one
    elif key == "lddgan_emoji_image_to_image":
        (out,) = (first[s_] for s_ in saves)
        _check_images(out, 4, 64)
        assert min(np.abs(out[i].astype(int) - out[j]).max() for i in range(4) for j in range(i)) > 0
    else:
        batch, single = (first[s_] for s_ in saves)
        _check_images(batch, 8, 32)
        _check_images(single, 1, 32)
        assert np.abs(batch[3].astype(int) - single[0]).max() <= 1  # seed 42 + 3 == seed 45


# -- fine-tuning: Cancel and resume ------------------------------------------------------------------------------
def _finetune_prompt(save_name, steps):
    return {"1": N("LDDGANModelLoader", model_name=SHIPPED), "2": N("LoadImage", image="example.png"),
            "3": N("LDDGANFineTune", model=["1", 0], images=["2", 0], steps=steps, batch_size=2, lr_g=5e-5,
                   lr_d=1e-4, schedule="sigmoid", gamma=6.0, r1_gamma=1.0, ema_decay=0.999, augment=0, seed=1,
                   save_name=save_name, save_every=2),
            "4": N("SaveImage", images=["3", 2], filename_prefix=f"ft/{save_name}")}


def test_finetune_cancel_keeps_the_state_and_queueing_again_resumes(server):
    """Cancel (POST /interrupt) during training: the state after the last iteration is kept and no model file
    is written; queueing the same graph again resumes there and ends with the weights of an uninterrupted run."""
    from lddgan_core.train import load_state
    from safetensors.torch import load_file

    steps, models = 12, os.path.join(server.base, "models", "lddgan")
    state = os.path.join(models, "cancelled.train.pt")
    pid = server.submit(_finetune_prompt("cancelled", steps))
    deadline = time.time() + 240
    while not os.path.isfile(state):  # the first periodic state (iteration 2): training is under way
        assert time.time() < deadline, server.log_tail()
        time.sleep(0.05)
    server.interrupt()
    entry = server.wait(pid)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in kinds, kinds
    stopped = load_state(state)["step"]
    assert 2 <= stopped < steps
    assert not os.path.exists(os.path.join(models, "cancelled.safetensors"))

    resumed = server.images(_ok(server, _finetune_prompt("cancelled", steps)))["4"]
    assert f"resuming {state} at iteration {stopped}/{steps}" in server.log_tail(200_000)
    assert load_state(state)["step"] == steps
    straight = server.images(_ok(server, _finetune_prompt("straight", steps)))["4"]
    assert np.array_equal(resumed, straight) and resumed.std() > 5
    a, b = (load_file(os.path.join(models, f"{n}.safetensors")) for n in ("cancelled", "straight"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_bad_inputs_are_node_errors(server):
    p = _finetune_prompt("bad", 2)
    del p["3"]["inputs"]["images"], p["2"]
    _failed(server, p, "LDDGANFineTune", "images / folder: no training images")
    p["3"]["inputs"]["folder"] = "no_such_folder"
    _failed(server, p, "LDDGANFineTune", "image folder", "no_such_folder", "does not exist")
    p = _finetune_prompt("../bad", 2)
    _failed(server, p, "LDDGANFineTune", "save_name: '../bad' is not a plain file name")


# -- VAE interop ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name, size, f", [(SHIPPED, 16, 2), ("test_kl_f8.safetensors", 32, 8)])
def test_core_vae_matches_lddgan(server, model_name, size, f):
    prompt = {
        "1": N("LDDGANModelLoader", model_name=model_name),
        "2": N("LDDGANSampler", model=["1", 0], seed=3, batch_size=2, denoise=1.0),
        "3": N("LDDGANDecode", model=["1", 0], latent=["2", 0]),
        "4": N("SaveImage", images=["3", 0], filename_prefix="vae/lddgan"),
        "5": N("LDDGANVAE", model=["1", 0]),
        "6": N("VAEDecode", samples=["2", 0], vae=["5", 0]),
        "7": N("SaveImage", images=["6", 0], filename_prefix="vae/core"),
        "8": N("LoadImage", image="example.png"),
        "9": N("ImageScale", image=["8", 0], upscale_method="area", width=size, height=size, crop="center"),
        "10": N("VAEEncode", pixels=["9", 0], vae=["5", 0]),
        "11": N("LDDGANEncode", model=["1", 0], image=["9", 0], fit="error"),
        "12": N("SaveLatent", samples=["10", 0], filename_prefix="vae/core"),
        "13": N("SaveLatent", samples=["11", 0], filename_prefix="vae/lddgan"),
    }
    entry = _ok(server, prompt)
    imgs = server.images(entry)
    _check_images(imgs["4"], 2, size)
    assert np.abs(imgs["4"].astype(int) - imgs["7"]).max() <= 2  # core VAE Decode == LDDGAN Decode
    from safetensors.torch import load_file

    core = load_file(_latent_file(server, entry, "12"))["latent_tensor"]
    ours = load_file(_latent_file(server, entry, "13"))["latent_tensor"]
    assert ours.shape == (1, 4, size // f, size // f)
    torch.testing.assert_close(core, ours, rtol=0, atol=1e-3 * max(1.0, ours.abs().max().item()))
    assert ours.std() > 1e-3


# -- core latent nodes ------------------------------------------------------------------------------------------
def test_latents_survive_core_latent_nodes(server):
    m = ["1", 0]
    p = {
        "1": N("LDDGANModelLoader", model_name=SHIPPED),
        "2": N("LDDGANSampler", model=m, seed=10, batch_size=4, denoise=1.0),
        "3": N("LDDGANDecode", model=m, latent=["2", 0]),
        "4": N("SaveImage", images=["3", 0], filename_prefix="lat/batch"),
        # LatentFromBatch numbers the picked sample (batch_index [2]): re-sampled it is image 2 again
        "5": N("LatentFromBatch", samples=["2", 0], batch_index=2, length=1),
        "6": N("LDDGANSampler", model=m, seed=10, batch_size=1, denoise=1.0, latent=["5", 0]),
        "7": N("LDDGANDecode", model=m, latent=["6", 0]),
        "8": N("SaveImage", images=["7", 0], filename_prefix="lat/from_batch"),
        # RepeatLatentBatch continues the numbering: [2] x 3 -> batch_index [2, 3, 4]
        "9": N("RepeatLatentBatch", samples=["5", 0], amount=3),
        "10": N("LDDGANSampler", model=m, seed=10, batch_size=1, denoise=1.0, latent=["9", 0]),
        "11": N("LDDGANDecode", model=m, latent=["10", 0]),
        "12": N("SaveImage", images=["11", 0], filename_prefix="lat/repeat"),
        "13": N("LatentUpscaleBy", samples=["2", 0], upscale_method="nearest-exact", scale_by=2.0),
        "14": N("LDDGANSampler", model=m, seed=0, batch_size=1, denoise=0.5, latent=["13", 0]),
        "15": N("LDDGANDecode", model=m, latent=["14", 0]),
        "16": N("SaveImage", images=["15", 0], filename_prefix="lat/upscaled"),
        "17": N("LatentBatch", samples1=["2", 0], samples2=["5", 0]),
        "18": N("LDDGANDecode", model=m, latent=["17", 0]),
        "19": N("SaveImage", images=["18", 0], filename_prefix="lat/latent_batch"),
        "20": N("SaveLatent", samples=["2", 0], filename_prefix="lat/saved"),
    }
    entry = _ok(server, p)
    im = server.images(entry)
    batch = im["4"].astype(int)
    _check_images(im["4"], 4, 16)
    assert np.abs(im["8"][0] - batch[2]).max() <= 1
    _check_images(im["12"], 3, 16)
    assert np.abs(im["12"][0] - batch[2]).max() <= 1 and np.abs(im["12"][1] - batch[3]).max() <= 1
    assert np.abs(im["12"][2] - batch).max(axis=(1, 2, 3)).min() > 1  # seed 14: not in the first batch
    _check_images(im["16"], 4, 32)  # the whole batch, upscaled and re-sampled at denoise 0.5
    _check_images(im["19"], 5, 16)
    assert np.abs(im["19"][:4] - batch).max() <= 1 and np.abs(im["19"][4] - batch[2]).max() <= 1

    saved = _latent_file(server, entry, "20")  # SaveLatent -> input/ -> LoadLatent -> LDDGAN Decode
    shutil.copy(saved, os.path.join(server.base, "input", "lddgan_roundtrip.latent"))
    back = {"1": p["1"], "2": N("LoadLatent", latent="lddgan_roundtrip.latent"),
            "3": N("LDDGANDecode", model=m, latent=["2", 0]),
            "4": N("SaveImage", images=["3", 0], filename_prefix="lat/loaded")}
    assert np.abs(server.images(_ok(server, back))["4"] - batch).max() <= 1


# -- bad inputs -------------------------------------------------------------------------------------------------
def _failed(server, prompt, node_type, *phrases):
    entry = server.run(prompt)
    err = error_of(entry)
    assert entry["status"]["status_str"] == "error" and err.get("node_type") == node_type, json.dumps(err)[:2000]
    for ph in phrases:
        assert ph in err["exception_message"], err["exception_message"]
    return err


def test_bad_inputs_are_node_errors_and_the_server_keeps_serving(server):
    m = ["1", 0]
    loader = N("LDDGANModelLoader", model_name=SHIPPED)

    # a model file that is not there: refused at validation, naming the input and the value
    status, body = server.queue({"1": N("LDDGANModelLoader", model_name="missing.safetensors"),
                                 "2": N("LDDGANSaveModel", model=m, filename="x", overwrite=False)})
    assert status == 400 and "1" in body["node_errors"], body
    text = json.dumps(body["node_errors"]["1"])
    assert "missing.safetensors" in text and "model_name" in text

    # a latent that does not fit the model: 8x8 -> 9x9
    _failed(server, {"1": loader,
                     "2": N("LDDGANSampler", model=m, seed=0, batch_size=1, denoise=1.0),
                     "3": N("LatentUpscaleBy", samples=["2", 0], upscale_method="bilinear", scale_by=1.125),
                     "4": N("LDDGANSampler", model=m, seed=0, batch_size=1, denoise=0.5, latent=["3", 0]),
                     "5": N("LDDGANDecode", model=m, latent=["4", 0]),
                     "6": N("SaveImage", images=["5", 0], filename_prefix="bad")},
            "LDDGANSampler", "latent: latent size 9x9 does not fit the generator")

    # a latent of another model (16 channels)
    _failed(server, {"1": loader,
                     "2": N("EmptySD3LatentImage", width=64, height=64, batch_size=1),
                     "3": N("LDDGANDecode", model=m, latent=["2", 0]),
                     "4": N("SaveImage", images=["3", 0], filename_prefix="bad")},
            "LDDGANDecode", "latent: expected latents [B, 4, h, w]", "[1, 16, 8, 8]")

    # an image that does not fit, with fit = error
    _failed(server, {"1": loader, "2": N("LoadImage", image="example.png"),
                     "3": N("ImageScale", image=["2", 0], upscale_method="area", width=15, height=15, crop="center"),
                     "4": N("LDDGANEncode", model=m, image=["3", 0], fit="error"),
                     "5": N("SaveLatent", samples=["4", 0], filename_prefix="bad")},
            "LDDGANEncode", "image: 15x15 px does not fit this model")

    # a VQ model has no faithful core VAE
    _failed(server, {"1": N("LDDGANModelLoader", model_name="test_vq.safetensors"),
                     "2": N("LDDGANSampler", model=m, seed=0, batch_size=1, denoise=1.0),
                     "3": N("LDDGANVAE", model=m),
                     "4": N("VAEDecode", samples=["2", 0], vae=["3", 0]),
                     "5": N("SaveImage", images=["4", 0], filename_prefix="bad")},
            "LDDGANVAE", "autoencoder is VQ")

    # saving: written into models/lddgan, listed by the loader, never overwritten unless asked
    save = {"1": loader, "2": N("LDDGANSaveModel", model=m, filename="saved_copy", overwrite=False)}
    _ok(server, save)
    path = os.path.join(server.base, "models", "lddgan", "saved_copy.safetensors")
    before = open(path, "rb").read()
    assert L.load(path).config.name == "official_tiny"
    save["1"] = N("LDDGANModelLoader", model_name=SHIPPED, precision="fp16")
    _failed(server, save, "LDDGANSaveModel", "already exists; turn overwrite on")
    assert open(path, "rb").read() == before
    loader_info = server.get_json("/object_info/LDDGANModelLoader")["LDDGANModelLoader"]
    assert "saved_copy.safetensors" in loader_info["input"]["required"]["model_name"][0]

    # still serving
    _check_images(server.images(_ok(server, _api("lddgan_generate")))["4"], 8, 32)


# -- what a creator hit in the frontend (issue 15) ---------------------------------------------------------------
def test_latent_tag_travels_through_core_latent_nodes_and_another_model_is_refused(server):
    """LDDGAN latents carry their latent space's identity; the core latent nodes copy the dict, so after each of
    them LDDGAN Decode with another model of the same channel count (from_yaml: another tiny KL model) refuses
    them, while the producing model decodes them. Latents through Save / Load Latent lose the tag: accepted."""
    m, other = ["1", 0], ["2", 0]
    base = {"1": N("LDDGANModelLoader", model_name=SHIPPED),
            "2": N("LDDGANModelLoader", model_name="from_yaml.safetensors"),
            "3": N("LDDGANSampler", model=m, seed=0, batch_size=2, denoise=1.0)}
    through = {"sampler": ["3", 0],
               "LatentFromBatch": N("LatentFromBatch", samples=["3", 0], batch_index=1, length=1),
               "RepeatLatentBatch": N("RepeatLatentBatch", samples=["3", 0], amount=2),
               "LatentUpscaleBy": N("LatentUpscaleBy", samples=["3", 0], upscale_method="nearest-exact", scale_by=2.0),
               "LatentBatch": N("LatentBatch", samples1=["3", 0], samples2=["3", 0])}
    for name, node in through.items():
        p = dict(base)
        if isinstance(node, dict):
            p["4"], src = node, ["4", 0]
        else:
            src = node
        p["5"] = N("LDDGANDecode", model=other, latent=src)
        p["6"] = N("SaveImage", images=["5", 0], filename_prefix="tag/other")
        _failed(server, p, "LDDGANDecode", "latent: these latents were made by another LDDGAN model's autoencoder")
        p["5"] = N("LDDGANDecode", model=m, latent=src)
        p["6"] = N("SaveImage", images=["5", 0], filename_prefix=f"tag/{name}")
        assert server.images(_ok(server, p))["6"].std() > 5, name
    # an LDDGAN Encode latent is tagged too: the other model's Sampler refuses it
    p = {**base, "4": N("LoadImage", image="example.png"),
         "5": N("LDDGANEncode", model=m, image=["4", 0], fit="crop and resize to model size"),
         "6": N("LDDGANSampler", model=other, seed=0, batch_size=1, denoise=0.5, latent=["5", 0]),
         "7": N("SaveLatent", samples=["6", 0], filename_prefix="tag/x")}
    _failed(server, p, "LDDGANSampler", "these latents were made by another LDDGAN model's autoencoder")
    # Save Latent keeps only the tensor: loaded back, the latent is untagged and any model takes it
    entry = _ok(server, {**base, "4": N("SaveLatent", samples=["3", 0], filename_prefix="tag/saved")})
    shutil.copy(_latent_file(server, entry, "4"), os.path.join(server.base, "input", "tagged_roundtrip.latent"))
    p = {**base, "4": N("LoadLatent", latent="tagged_roundtrip.latent"),
         "5": N("LDDGANDecode", model=other, latent=["4", 0]),
         "6": N("SaveImage", images=["5", 0], filename_prefix="tag/loaded")}
    _check_images(server.images(_ok(server, p))["6"], 2, 16)


def test_encode_fit_error_refuses_any_other_size(server):
    """The 16 px model with fit = error: a 32x32 image (a multiple of every factor) is refused, as the tooltip says;
    16x16 is taken."""
    for size, ok in ((32, False), (16, True)):
        p = {"1": N("LDDGANModelLoader", model_name=SHIPPED), "2": N("LoadImage", image="example.png"),
             "3": N("ImageScale", image=["2", 0], upscale_method="area", width=size, height=size, crop="center"),
             "4": N("LDDGANEncode", model=["1", 0], image=["3", 0], fit="error"),
             "5": N("SaveLatent", samples=["4", 0], filename_prefix=f"fit/{size}")}
        if ok:
            _ok(server, p)
        else:
            _failed(server, p, "LDDGANEncode", "image: 32x32 px does not fit this model: fit='error' takes only the "
                                               "model's own size, 16x16 px")
    tooltip = server.get_json("/object_info/LDDGANEncode")["LDDGANEncode"]["input"]["required"]["fit"][1]["tooltip"]
    assert "'error' refuses them" in tooltip


def test_loader_lists_no_side_files(server):
    """Files beside models that are not models (fine-tune side files, caches, temporary files, foreign
    safetensors) are not offered, and naming one is a validation error; a new model appears on the next
    /object_info (what R in the frontend fetches)."""
    from safetensors.torch import save_file

    models = pathlib.Path(server.base) / "models" / "lddgan"
    save_file({"w": torch.zeros(2)}, str(models / "side.discriminator.safetensors"),
              metadata={"format": "lddgan-discriminator", "config": "{}"})
    (models / "side.cache").mkdir(exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(models / "side.cache" / "latents-00.safetensors"))
    shutil.copy(models / "test_vq.safetensors", models / ".tmp-abcside.safetensors")
    save_file({"w": torch.zeros(2)}, str(models / "foreign.safetensors"))
    torch.manual_seed(5)
    L.LDDGAN(tiny_config("kl")).save(models / "fresh.safetensors")
    names = server.get_json("/object_info/LDDGANModelLoader")["LDDGANModelLoader"]["input"]["required"][
        "model_name"][0]
    assert "fresh.safetensors" in names and "test_vq.safetensors" in names
    bad = [n for n in names if "side" in n or "foreign" in n or ".tmp-" in n]
    assert not bad, bad
    status, body = server.queue({"1": N("LDDGANModelLoader", model_name="side.discriminator.safetensors"),
                                 "2": N("LDDGANSaveModel", model=["1", 0], filename="x", overwrite=False)})
    assert status == 400 and "is neither an LDDGAN model" in json.dumps(body["node_errors"]["1"]), body
