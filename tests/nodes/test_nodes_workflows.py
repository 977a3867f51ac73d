"""Example workflows: editor format <-> API twins, thumbnails, shipped models only, and each one run end
to end offline with the pack's node classes (the real-ComfyUI run is tests/nodes/test_nodes_comfyui.py)."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, TESTS

sys.path[:0] = [str(REPO), str(REPO / "tools")]
import nodes as P  # noqa: E402  nodes/ is not pip-installed: imported from the checkout
import build_workflows as B  # noqa: E402  tools/build_workflows.py
import comfy_workflow as CW  # noqa: E402

EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
SHIPPED = sorted(os.listdir(REPO / "lddgan_core" / "models"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The fine-tune example trains a tiny model: one thread is the fastest on a busy 2-core machine (several
    threads can be ten times slower there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def info():
    return B.object_info()


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("input")
    B.example_png(d / "example.png")
    return str(d)


def _api(name):
    return json.loads((TESTS / "workflows" / f"{name}.api.json").read_text())


def test_examples_exist_with_thumbnails():
    from PIL import Image

    # the frontend shows a custom node's template under its file name: the names are the cards' titles
    assert {p.stem for p in EXAMPLES} == {"LDDGAN Generate", "LDDGAN Image to Image Variations",
                                          "LDDGAN Fixed Seed Batch", "LDDGAN Fine-Tune", "LDDGAN Emoji Variations",
                                          "LDDGAN Emoji Image to Image"}
    assert {B.ID[p.stem] for p in EXAMPLES} == set(B.WORKFLOWS)
    for p in EXAMPLES:
        thumb = Image.open(p.with_suffix(".jpg"))
        assert thumb.format == "JPEG" and thumb.size == (512, 384)
        assert np.asarray(thumb.convert("L"), dtype=np.float32).std() > 10  # a real picture
    assert Image.open(REPO / "docs" / "basic_graph.png").size[0] == 1024


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_ui_converts_to_its_api_twin(path, info):
    ui = json.loads(path.read_text())
    assert ui["version"] == 0.4 and ui["last_link_id"] == len(ui["links"])
    assert CW.ui_to_api(ui, info) == _api(B.ID[path.stem])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_use_only_shipped_models(path):
    ui = json.loads(path.read_text())
    loaders = [n for n in ui["nodes"] if n["type"] == "LDDGANModelLoader"]
    assert loaders and all(n["widgets_values"][0] in SHIPPED for n in loaders)


def test_builder_reproduces_the_committed_workflows(tmp_path):
    ex, api, docs = tmp_path / "ex", tmp_path / "api", tmp_path / "docs"
    for d in (ex, api, docs):
        d.mkdir()
    B.build(ex, api, docs)
    for p in EXAMPLES:
        assert (ex / p.name).read_text() == p.read_text(), f"{p.name}: rerun python tools/build_workflows.py"
        twin = f"{B.ID[p.stem]}.api.json"
        assert (api / twin).read_text() == (TESTS / "workflows" / twin).read_text()


def test_generate_runs_and_is_reproducible(input_dir):
    (prefix, a), (shown, big) = CW.run_offline(_api("lddgan_generate"), P.NODE_CLASS_MAPPINGS, input_dir)
    (_, b), _ = CW.run_offline(_api("lddgan_generate"), P.NODE_CLASS_MAPPINGS, input_dir)
    assert prefix == "LDDGAN/generate" and a.shape == (8, 32, 32, 3)
    # saved at the true size, previewed 4x larger (nearest: every pixel a 4x4 block)
    assert shown == "PreviewImage" and torch.equal(big, a.repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert a.std() > 0.05 and (a[0] - a[1]).abs().max() > 0.05
    assert torch.equal(a, b)


def test_fixed_seed_batch_image_3_is_seed_45(input_dir):
    saved = dict(CW.run_offline(_api("lddgan_fixed_seed_batch"), P.NODE_CLASS_MAPPINGS, input_dir))
    batch, single = saved["LDDGAN/batch_seed42"], saved["LDDGAN/single_seed45"]
    assert batch.shape == (8, 32, 32, 3) and single.shape == (1, 32, 32, 3)
    torch.testing.assert_close(batch[3], single[0], rtol=0, atol=5e-5)
    assert (batch[2] - single[0]).abs().max() > 0.05


def test_image_to_image_makes_variations_of_the_input(input_dir):
    (_, out), (_, big) = CW.run_offline(_api("lddgan_image_to_image"), P.NODE_CLASS_MAPPINGS, input_dir)
    assert big.shape == (4, 128, 128, 3)
    assert out.shape == (4, 32, 32, 3)
    assert min((out[i] - out[j]).abs().max() for i in range(4) for j in range(i)) > 1e-3
    api = _api("lddgan_image_to_image")
    sampler = next(k for k, v in api.items() if v["class_type"] == "LDDGANSampler")
    api[sampler]["inputs"]["denoise"] = 0.0  # denoise 0: the (resized) input image comes back
    (_, same), _ = CW.run_offline(api, P.NODE_CLASS_MAPPINGS, input_dir)
    model = P.LDDGANModelLoader().load(B.SHIPPED)[0]
    x = CW._load_image(os.path.join(input_dir, "example.png"))
    ref = P.LDDGANDecode().decode(model, P.LDDGANEncode().encode(model, x, "crop and resize to model size")[0])[0]
    torch.testing.assert_close(same, ref.repeat(4, 1, 1, 1), rtol=0, atol=5e-5)


def test_model_loader_lists_the_shipped_models_by_clear_names():
    spec = P.LDDGANModelLoader.INPUT_TYPES()["required"]["model_name"]
    assert {B.SHIPPED, B.EMOJI} <= set(spec[0])
    assert "lddgan_emoji64: colour emoji, 64x64 px" in spec[1]["tooltip"]
    model = P.LDDGANModelLoader().load(B.EMOJI)[0]
    assert model.config.image_size == 64 and model.config.name == "lddgan-emoji64"


def _rms(a, b):
    return ((a - b) ** 2).mean(dim=(1, 2, 3)).sqrt()


def test_emoji_variations_stay_near_the_emoji_they_vary(input_dir):
    saved = dict(CW.run_offline(_api("lddgan_emoji_variations"), P.NODE_CLASS_MAPPINGS, input_dir))
    new, var = saved["LDDGAN/emoji"], saved["LDDGAN/emoji_variations"]
    assert new.shape == (4, 64, 64, 3) and var.shape == (4, 64, 64, 3)
    assert min(float((var[i] - var[j]).abs().max()) for i in range(4) for j in range(i)) > 1e-2  # 4 variations
    # denoise 0.5 of emoji 0: nearer to it than the other new emoji are (their mean distance to it)
    others = float(_rms(new[1:], new[:1]).mean())
    near = _rms(var, new[:1])
    print(f"emoji variations: RMS to the varied emoji {near.tolist()}, other emoji {others:.3f}")
    assert float(near.max()) < others


def test_emoji_image_to_image_keeps_the_loaded_picture(input_dir):
    (_, out), = CW.run_offline(_api("lddgan_emoji_image_to_image"), P.NODE_CLASS_MAPPINGS, input_dir)
    assert out.shape == (4, 64, 64, 3)
    model = P.LDDGANModelLoader().load(B.EMOJI)[0]
    x = CW._load_image(os.path.join(input_dir, "example.png"))
    ref = P.LDDGANDecode().decode(model, P.LDDGANEncode().encode(model, x, "crop and resize to model size")[0])[0]
    fresh = P.LDDGANDecode().decode(model, P.LDDGANSampler().sample(model, 0, 4, 1.0)[0])[0]
    # denoise 0.5 redraws the picture: nearer to it than new emoji are
    print(f"emoji image to image: RMS to the encoded picture {_rms(out, ref).tolist()}, new emoji {_rms(fresh, ref).tolist()}")
    assert float(_rms(out, ref).mean()) < float(_rms(fresh, ref).mean())


def test_finetune_example_trains_saves_and_resumes(input_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LDDGAN_MODELS_DIR", str(tmp_path))
    bars = []
    monkeypatch.setattr(P.runtime, "progress_bar",
                        lambda total: bars.append(P.runtime._NullProgress(total)) or bars[-1])
    api = _api("lddgan_finetune")
    steps = api["3"]["inputs"]["steps"]
    (prefix, out), (p1, curve), (p2, grid) = CW.run_offline(api, P.NODE_CLASS_MAPPINGS, input_dir)
    assert bars[0].total == steps and bars[0].history == list(range(1, steps + 1))
    assert prefix == "LDDGAN/finetune" and p1 == p2 == "PreviewImage"
    assert out.shape == (4, 32, 32, 3) and curve.shape == (1, 360, 640, 3) and grid.shape == (1, 138, 138, 3)
    assert out.std() > 0.05 and curve.std() > 0.05 and grid.std() > 0.05
    name = B.FINETUNE_NAME + ".safetensors"
    assert name in P.runtime.list_models()  # LDDGAN Model Loader lists the result
    # the sampler downstream uses the fine-tuned model: the same seeds give other images than the shipped model's
    shipped = P.LDDGANModelLoader().load(B.SHIPPED)[0]
    before = P.LDDGANDecode().decode(shipped, P.LDDGANSampler().sample(shipped, 0, 4, 1.0)[0])[0]
    assert (out - before).abs().max() > 1e-3
    # ... and they have moved toward the one training picture (its colours and layout): RMS distance to it
    x = CW._load_image(os.path.join(input_dir, "example.png"))
    target = P.LDDGANDecode().decode(shipped, P.LDDGANEncode().encode(shipped, x, "crop and resize to model size")[0])[0]
    dist = lambda imgs: float(((imgs - target) ** 2).mean(dim=(1, 2, 3)).sqrt().mean())  # noqa: E731
    print(f"fine-tune example: RMS distance of the samples to the picture {dist(before):.3f} -> {dist(out):.3f}")
    assert dist(out) < 0.75 * dist(before)
    trained = P.LDDGANModelLoader().load(name)[0]
    again = P.LDDGANDecode().decode(trained, P.LDDGANSampler().sample(trained, 0, 4, 1.0)[0])[0]
    torch.testing.assert_close(again, out, rtol=0, atol=1e-6)  # the saved file is the model the graph used
    # queued again (same save_name): the finished run is resumed, not retrained (no iteration), same pixels
    del bars[:]
    (_, out2), (_, curve2), (_, grid2) = CW.run_offline(api, P.NODE_CLASS_MAPPINGS, input_dir)
    assert bars[0].total == steps and bars[0].history == []
    assert torch.equal(out2, out) and torch.equal(curve2, curve) and torch.equal(grid2, grid)


def test_converter_reads_extra_widget_slots_and_converted_widgets(info):
    ui = {"links": [[1, 6, 0, 2, 0, "LDDGAN_MODEL"], [2, 3, 0, 2, 2, "INT"], [3, 1, 0, 6, 0, "*"]], "nodes": [
        {"id": 1, "type": "LDDGANModelLoader", "mode": 0, "inputs": [], "widgets_values": ["m.safetensors", "fp16"]},
        {"id": 2, "type": "LDDGANSampler", "mode": 0, "widgets_values": [7, "increment", 3, 0.25],
         "inputs": [{"name": "model", "link": 1}, {"name": "latent", "link": None},
                    {"name": "seed", "link": 2, "widget": {"name": "seed"}}]},
        {"id": 3, "type": "PrimitiveNode", "mode": 0, "widgets_values": [9, "fixed"]},
        {"id": 4, "type": "MarkdownNote", "mode": 0, "widgets_values": ["text"]},
        {"id": 5, "type": "LDDGANDecode", "mode": 2, "widgets_values": []},
        {"id": 6, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "link": 3}], "widgets_values": []},
    ]}
    api = CW.ui_to_api(ui, info)
    assert set(api) == {"1", "2"}
    # allow_download is missing (saved before that optional widget existed): its default is filled in
    assert api["1"]["inputs"] == {"model_name": "m.safetensors", "precision": "fp16", "allow_download": False}
    # the seed comes from a PrimitiveNode: the editor mirrors its value in the widget; the model through a Reroute
    assert api["2"]["inputs"] == {"seed": 7, "batch_size": 3, "denoise": 0.25, "model": ["1", 0]}
    ui["nodes"][1]["widgets_values"] = [7, "increment"]
    with pytest.raises(ValueError, match="no widget value for 'batch_size'"):
        CW.ui_to_api(ui, info)
    with pytest.raises(KeyError, match="not in /object_info"):
        CW.ui_to_api({"links": [], "nodes": [{"id": 1, "type": "Nope", "widgets_values": []}]}, info)


def test_registry_metadata_and_requirements():
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] == "lddgan" and "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://github.com/")
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy[key], key
    lines = (REPO / "requirements.txt").read_text().splitlines()
    reqs = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert reqs == project["dependencies"]
    assert (REPO / "docs" / "icon.png").is_file()
