"""Builds the example workflows: example_workflows/<name>.json (editor format, for ComfyUI's template
browser) with a <name>.jpg thumbnail, their API-format twins tests/workflows/<name>.api.json (headless
runs), and docs/basic_graph.png. Thumbnails show the graph and the images the workflow really produces
(run offline with the pack's node classes).

    python tools/build_workflows.py             # from the repository root; rewrites all of the above
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import comfy_workflow as CW  # noqa: E402  (tools/comfy_workflow.py)

SHIPPED = "lddgan_shapes32.safetensors"
NOTE = ("**LDDGAN** - few-step (T <= 4) latent denoising diffusion GAN.\n\n"
        "The model used here, `lddgan_shapes32`, ships with the pack and needs no download: trained by the project "
        "on procedural coloured shapes (4 shapes x 4 colours on varied backgrounds), 32x32 px. Pick another model "
        "in **LDDGAN Model Loader** (models/lddgan) for other images.")


class Graph:
    """A small builder for editor-format graphs."""

    def __init__(self, info: dict):
        self.info, self.nodes, self.links = info, [], []

    def add(self, type_, pos, widgets=(), title=None, **inputs) -> int:
        nid = len(self.nodes) + 1
        entry = self.info[type_]
        node_inputs = []
        for group in ("required", "optional"):
            for name in entry["input_order"].get(group, []):
                spec = entry["input"][group][name]
                if CW._is_widget(spec):
                    continue
                link = None
                if name in inputs:
                    src, slot = inputs.pop(name)
                    link = len(self.links) + 1
                    self.links.append([link, src, slot, nid, len(node_inputs), spec[0]])
                    self.nodes[src - 1]["outputs"][slot]["links"].append(link)
                node_inputs.append({"name": name, "type": spec[0], "link": link})
        if inputs:
            raise KeyError(f"{type_}: unknown inputs {sorted(inputs)}")
        n_widgets = len(CW.widget_inputs(entry))
        node = {"id": nid, "type": type_, "pos": list(pos), "size": [300, 46 + 24 * (n_widgets + len(node_inputs))],
                "flags": {}, "order": nid - 1, "mode": 0, "inputs": node_inputs,
                "outputs": [{"name": n, "type": t, "slot_index": i, "links": []}
                            for i, (n, t) in enumerate(zip(entry["output_name"], entry["output"]))],
                "properties": {"Node name for S&R": type_,
                               "cnr_id": "lddgan" if type_.startswith("LDDGAN") else "comfy-core"},
                "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return nid

    def note(self, pos, text, size=(380, 150)):
        self.nodes.append({"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": list(pos), "size": list(size),
                           "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                           "title": "Note", "properties": {}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})

    def ui(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
                "version": 0.4}


def generate(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (40, 120), [SHIPPED, "auto", False])
    s = g.add("LDDGANSampler", (380, 120), [0, "randomize", 8, 1.0], model=(m, 0))
    d = g.add("LDDGANDecode", (720, 120), [], model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (1060, 120), ["LDDGAN/generate"], images=(d, 0))
    g.note((40, 300), NOTE)
    return g


def image_to_image(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (40, 120), [SHIPPED, "auto", False])
    i = g.add("LoadImage", (40, 300), ["example.png", "image"])
    e = g.add("LDDGANEncode", (380, 300), ["crop and resize to model size"], model=(m, 0), image=(i, 0))
    r = g.add("RepeatLatentBatch", (380, 480), [4], samples=(e, 0))
    s = g.add("LDDGANSampler", (720, 120), [0, "randomize", 1, 0.5], title="LDDGAN Sampler (4 variations)",
              model=(m, 0), latent=(r, 0))
    d = g.add("LDDGANDecode", (1060, 120), [], model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (1060, 300), ["LDDGAN/image_to_image"], images=(d, 0))
    g.note((720, 420), "Image-to-image / variations: **denoise** sets how much is redrawn (0 = the input, 1 = a new "
                       "image); Repeat Latent Batch makes 4 copies, and each gets its own seed (seed + i).\n\n" + NOTE,
           size=(320, 260))
    return g


def fixed_seed_batch(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (40, 120), [SHIPPED, "auto", False])
    s = g.add("LDDGANSampler", (380, 120), [42, "fixed", 8, 1.0], title="LDDGAN Sampler (seed 42, batch 8)",
              model=(m, 0))
    d = g.add("LDDGANDecode", (720, 120), [], model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (1060, 120), ["LDDGAN/batch_seed42"], images=(d, 0))
    s1 = g.add("LDDGANSampler", (380, 360), [45, "fixed", 1, 1.0], title="LDDGAN Sampler (seed 45)", model=(m, 0))
    d1 = g.add("LDDGANDecode", (720, 360), [], model=(m, 0), latent=(s1, 0))
    g.add("SaveImage", (1060, 360), ["LDDGAN/single_seed45"], images=(d1, 0))
    g.note((40, 300), "Image i of a batch uses seed + i, so image 3 of the seed-42 batch is the seed-45 image: a "
                      "good picture from a batch is re-made alone from its seed.\n\n" + NOTE, size=(300, 260))
    return g


FINETUNE_NAME = "lddgan_finetune_example"  # models/lddgan/<this>.safetensors (+ the run's files beside it)


def finetune(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (40, 120), [SHIPPED, "auto", False])
    i = g.add("LoadImage", (40, 320), ["example.png", "image"])
    # steps, batch_size, lr_g, lr_d, schedule, gamma, r1_gamma, ema_decay, augment, seed, save_name, save_every,
    # folder, fit
    f = g.add("LDDGANFineTune", (380, 120), [20, 4, 5e-5, 1e-4, "sigmoid", 6.0, 1.0, 0.999, 4, 0, FINETUNE_NAME, 0,
                                             "", "crop and resize to model size"],
              title="LDDGAN Fine-Tune", model=(m, 0), images=(i, 0))
    s = g.add("LDDGANSampler", (720, 120), [0, "fixed", 4, 1.0], model=(f, 0))
    d = g.add("LDDGANDecode", (1060, 120), [], model=(f, 0), latent=(s, 0))
    g.add("SaveImage", (1060, 300), ["LDDGAN/finetune"], images=(d, 0))
    g.add("PreviewImage", (720, 330), [], title="Preview Image (loss curve)", images=(f, 1))
    g.add("PreviewImage", (720, 460), [], title="Preview Image (sample grid)", images=(f, 2))
    g.note((40, 560), "Fine-tuning with Weighted Learning: the model is trained on **example.png** (Load Image; 4 "
                      "augmented versions) for 20 iterations and saved as models/lddgan/" + FINETUNE_NAME +
                      ".safetensors, which LDDGAN Model Loader then lists. **Cancel** stops cleanly; queueing again "
                      "with the same save_name resumes (a finished run is returned as it is). For real use, connect "
                      "your own images or give a folder, and raise steps.\n\n" + NOTE, size=(640, 200))
    return g


WORKFLOWS = {"lddgan_generate": generate, "lddgan_image_to_image": image_to_image,
             "lddgan_fixed_seed_batch": fixed_seed_batch, "lddgan_finetune": finetune}


def object_info() -> dict:
    import nodes as P

    DISPLAY.update(P.NODE_DISPLAY_NAME_MAPPINGS)
    return {**CW.CORE_OBJECT_INFO, **CW.object_info_for(P.NODE_CLASS_MAPPINGS)}


def example_png(path) -> str:
    """A deterministic 64x48 test picture, standing in for ComfyUI's input/example.png outside ComfyUI."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    rgb = np.stack([x / 63, y / 47, 0.5 + 0.5 * np.sin((x + y) / 6)], -1)
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)
    return str(path)


DISPLAY = {"LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
           "RepeatLatentBatch": "Repeat Latent Batch",
           "LatentFromBatch": "Latent From Batch", "VAEDecode": "VAE Decode"}


def _shown_widgets(entry, values):
    """Widget values without the extra slots (control_after_generate, upload button)."""
    out, pos = [], 0
    for _name, spec in CW.widget_inputs(entry):
        if pos < len(values):
            out.append(values[pos])
        pos += 1 + CW._extra_slots(spec)
    return out


# -- pictures --------------------------------------------------------------------------------------------------
def draw_graph(ui: dict, width: int, height: int | None = None, images=None):
    """The graph as boxes and wires (PIL), with the workflow's output images in a strip below."""
    from PIL import Image, ImageDraw, ImageFont

    nodes = [n for n in ui["nodes"] if n["type"] not in CW.VIRTUAL_NODES]
    x0 = min(n["pos"][0] for n in nodes) - 20
    y0 = min(n["pos"][1] for n in nodes) - 40
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + 20
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + 20
    if height is None:  # as tall as the graph needs at this width, plus the image strip
        k = width / (x1 - x0)
        strip = min(width // 4, 200) if images is not None else 0
        height = int((y1 - y0) * k) + strip
    else:
        strip = height // 3 if images is not None else 0
        k = min(width / (x1 - x0), (height - strip) / (y1 - y0))
    img = Image.new("RGB", (width, height), (32, 32, 36))
    dr = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(9, int(15 * k)))
    small = ImageFont.load_default(size=max(8, int(13 * k)))
    P = lambda x, y: (int((x - x0) * k), int((y - y0) * k))  # noqa: E731
    by_id = {n["id"]: n for n in nodes}
    slot_y = lambda n, i: n["pos"][1] + 34 + 22 * i  # noqa: E731
    for _lid, a, sa, b, sb, _t in ui["links"]:
        na, nb = by_id[a], by_id[b]
        dr.line([P(na["pos"][0] + na["size"][0], slot_y(na, sa)), P(nb["pos"][0], slot_y(nb, sb))],
                fill=(120, 200, 120), width=max(1, int(3 * k)))
    for n in nodes:
        (ax, ay), (bx, by) = P(*n["pos"]), P(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        ours = n["type"].startswith("LDDGAN")
        dr.rectangle([ax, ay - int(26 * k), bx, by], fill=(53, 53, 60),
                     outline=(200, 160, 60) if ours else (110, 110, 120), width=max(1, int(2 * k)))
        dr.text((ax + 4, ay - int(22 * k)), n.get("title") or DISPLAY.get(n["type"], n["type"]), fill=(235, 235, 235),
                font=font)
        entry = object_info().get(n["type"], {})
        names = [w for w, _spec in CW.widget_inputs(entry)] if entry else []
        values = _shown_widgets(entry, n["widgets_values"]) if entry else []
        for j, (w, v) in enumerate(zip(names, values)):
            dr.text((ax + 6, ay + 4 + int(17 * k) * j), f"{w}: {v}"[:44], fill=(175, 175, 185), font=small)
    if images is not None:
        arr = images[: 8].clamp(0, 1).mul(255).round().byte().numpy()  # [n, h, w, 3]
        side = strip - 12
        for i, a in enumerate(arr):
            tile = Image.fromarray(a).resize((side, side), Image.NEAREST)
            img.paste(tile, (8 + i * (side + 6), height - strip + 6))
    return img


def icon(path):
    """The registry icon (docs/icon.png, 400x400): noise turning into a picture in T = 4 steps."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64] / 63.0
    clean = np.stack([0.2 + 0.7 * x, 0.3 + 0.5 * (1 - y), 0.6 + 0.3 * np.sin(6 * x * y)], -1)
    img = Image.new("RGB", (400, 400), (28, 28, 34))
    for i, a in enumerate(np.linspace(1.0, 0.0, 4)):  # x_T ... x_0
        tile = np.clip((1 - a) * clean + a * rng.standard_normal(clean.shape) * 0.5 + a * 0.5, 0, 1)
        img.paste(Image.fromarray((tile * 255).astype(np.uint8)).resize((84, 84), Image.NEAREST), (14 + i * 96, 60))
    dr = ImageDraw.Draw(img)
    dr.text((200, 250), "LDDGAN", fill=(235, 200, 90), font=ImageFont.load_default(size=64), anchor="mm")
    dr.text((200, 320), "latent diffusion GAN, T <= 4", fill=(200, 200, 210), font=ImageFont.load_default(size=22),
            anchor="mm")
    img.save(path)
    return str(path)


@contextlib.contextmanager
def models_dir(path: str):
    """$LDDGAN_MODELS_DIR set for the duration: the save folder outside ComfyUI (the fine-tune example writes
    its model there)."""
    old = os.environ.get("LDDGAN_MODELS_DIR")
    os.environ["LDDGAN_MODELS_DIR"] = path
    try:
        yield path
    finally:
        if old is None:
            del os.environ["LDDGAN_MODELS_DIR"]
        else:
            os.environ["LDDGAN_MODELS_DIR"] = old


def build(out_examples=REPO / "example_workflows", out_api=REPO / "tests" / "workflows",
          out_docs=REPO / "docs") -> list[str]:
    import tempfile

    import nodes as P

    info, written = object_info(), []
    os.makedirs(out_examples, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, models_dir(os.path.join(tmp, "models")):
        example_png(os.path.join(tmp, "example.png"))
        for name, make in WORKFLOWS.items():
            ui = make(info).ui()
            api = CW.ui_to_api(ui, info)
            saved = CW.run_offline(api, P.NODE_CLASS_MAPPINGS, tmp)
            images = saved[0][1]  # the first SaveImage (node ids run in order)
            for path, text in ((out_examples / f"{name}.json", json.dumps(ui, indent=1)),
                               (out_api / f"{name}.api.json", json.dumps(api, indent=1))):
                path.write_text(text + "\n")
                written.append(str(path))
            draw_graph(ui, 512, 384, images=images).save(out_examples / f"{name}.jpg", quality=90)
            written.append(str(out_examples / f"{name}.jpg"))
            if name == "lddgan_generate":
                os.makedirs(out_docs, exist_ok=True)
                draw_graph(ui, 1024, images=images).save(out_docs / "basic_graph.png")
                written.append(str(out_docs / "basic_graph.png"))
    written.append(icon(out_docs / "icon.png"))
    return written


if __name__ == "__main__":
    import torch

    # tiny models: one thread is the fastest (several fight over a busy machine's cores), and the fine-tune
    # example's pixels depend on the thread count (float sums), so thumbnails are made the same way each time
    torch.set_num_threads(1)
    for p in build():
        print("wrote", os.path.relpath(p, REPO))
