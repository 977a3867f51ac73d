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
EMOJI = "lddgan_emoji64.safetensors"
EMOJI_NOTE = ("**LDDGAN emoji** - `lddgan_emoji64` ships with the pack and needs no download: trained by the project on "
              "the pictures of Noto Color Emoji (SIL Open Font License 1.1), 64x64 px on white, in 1,370 emoji. "
              "Its pictures are emoji-like, not copies of the font's (see the README's memorisation check).")
NOTE = ("**LDDGAN** - few-step (T <= 4) latent denoising diffusion GAN.\n\n"
        "The model used here, `lddgan_shapes32`, ships with the pack and needs no download: trained by the project "
        "on procedural coloured shapes (4 shapes x 4 colours on varied backgrounds), 32x32 px. Pick another model "
        "in **LDDGAN Model Loader** (models/lddgan) for other images.")

# The fine-tune example: one picture, a short run that visibly moves the model toward it. Measured with
# tools/finetune_example_probe.py on ComfyUI's input/example.png (batch 4, augment 4): mean RMS distance ([-1, 1]) of
# 64 samples to the picture, shipped model 0.856; 20 iterations at the fine-tune default lr_g 5e-5 -> 0.667 (the
# shapes still show), 100 at 1e-4 (augment 8) -> 0.595, 100 at 2e-4 -> 0.549 (the picture's sky-blue top and green
# ground), 300 at 2e-4 -> 0.466 (one washed-out copy of it: collapse)
# (v2 model.) Re-measured with v3 and today's FINETUNE_DEFAULTS for the fields without a widget (thirteenth session):
# 100 at 2e-4, augment 4 -> 0.904 -> 0.576, 35 s on one thread.
EXAMPLE_STEPS, EXAMPLE_LR_G = 100, 2e-4


class Graph:
    """A small builder for editor-format graphs."""

    def __init__(self, info: dict):
        self.info, self.nodes, self.links = info, [], []

    def add(self, type_, pos, widgets=(), title=None, size=None, **inputs) -> int:
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
        size = list(size) if size else [300, 46 + 24 * (n_widgets + len(node_inputs))]
        node = {"id": nid, "type": type_, "pos": list(pos), "size": size,
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


# Layout at the frontend's default zoom (1.0, offset 0): nothing left of x = 100 (the sidebar is 59 px wide) or
# above y = 150 (title bars are 30 px; the top bar ends at y = 90). Image outputs get room for what they show:
# the frontend draws images at most at their own size, in a grid that fits the node, so the 32 px outputs are
# also shown 4x larger (core Upscale Image By, nearest-exact) in a Preview Image, while Save Image keeps the
# true size. tests/nodes/test_browser.py checks in a real browser that nothing overlaps before or after a run.
X0, Y0, GAP = 100, 150, 50
MIN_IMAGE_NODE_H = 270  # the frontend gives Save / Preview Image nodes at least this height (measured, 1.35.9)


def enlarged(g, images, pos, n, title="Preview Image (4x, not saved)"):
    """Upscale Image By (nearest-exact, 4x) -> Preview Image: 32 px outputs shown at 128 px; ``n`` images."""
    cols = min(n, 4)
    rows = -(-n // cols)
    up = g.add("ImageScaleBy", pos, ["nearest-exact", 4.0], title="Upscale Image By 4x",
               size=(300, 82), image=images)
    return g.add("PreviewImage", (pos[0], pos[1] + 82 + GAP), [], title=title,
                 size=(max(300, 132 * cols + 16), max(MIN_IMAGE_NODE_H, 132 * rows + 50)), images=(up, 0))


def generate(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (X0, Y0), [SHIPPED, "auto", False], size=(300, 106))
    s = g.add("LDDGANSampler", (X0 + 340, Y0), [0, "randomize", 8, 1.0], size=(300, 154), model=(m, 0))
    d = g.add("LDDGANDecode", (X0 + 680, Y0), [], size=(240, 66), model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 116), ["LDDGAN/generate"], size=(240, MIN_IMAGE_NODE_H), images=(d, 0))
    enlarged(g, (d, 0), (X0 + 940, Y0), 8)
    g.note((X0, Y0 + 156), NOTE, size=(300, 240))
    return g


def image_to_image(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (X0, Y0), [SHIPPED, "auto", False], size=(300, 106))
    i = g.add("LoadImage", (X0, Y0 + 156), ["example.png", "image"], size=(300, 330))
    e = g.add("LDDGANEncode", (X0 + 340, Y0), ["crop and resize to model size"], size=(300, 90), model=(m, 0),
              image=(i, 0))
    r = g.add("RepeatLatentBatch", (X0 + 340, Y0 + 140), [4], size=(300, 60), samples=(e, 0))
    s = g.add("LDDGANSampler", (X0 + 340, Y0 + 250), [0, "randomize", 1, 0.5], title="LDDGAN Sampler (4 variations)",
              size=(300, 154), model=(m, 0), latent=(r, 0))
    d = g.add("LDDGANDecode", (X0 + 680, Y0), [], size=(240, 66), model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 116), ["LDDGAN/image_to_image"], size=(240, MIN_IMAGE_NODE_H),
          images=(d, 0))
    enlarged(g, (d, 0), (X0 + 940, Y0), 4)
    g.note((X0 + 940, Y0 + 450), "Image-to-image / variations: **denoise** sets how much is redrawn (0 = the input, "
                                 "1 = a new image); Repeat Latent Batch makes 4 copies, and each gets its own seed "
                                 "(seed + i).\n\n" + NOTE, size=(400, 240))
    return g


def emoji_variations(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (X0, Y0), [EMOJI, "auto", False], size=(300, 106))
    s = g.add("LDDGANSampler", (X0 + 340, Y0), [23, "fixed", 4, 1.0], title="LDDGAN Sampler (4 new emoji)",
              size=(300, 154), model=(m, 0))
    d = g.add("LDDGANDecode", (X0 + 680, Y0), [], size=(240, 66), model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 116), ["LDDGAN/emoji"], size=(300, MIN_IMAGE_NODE_H), images=(d, 0))
    pick = g.add("LatentFromBatch", (X0 + 340, Y0 + 204), [0, 1], title="Latent From Batch (the first emoji)",
                 size=(300, 82), samples=(s, 0))
    r = g.add("RepeatLatentBatch", (X0 + 340, Y0 + 336), [4], size=(300, 60), samples=(pick, 0))
    v = g.add("LDDGANSampler", (X0 + 340, Y0 + 446), [100, "fixed", 1, 0.5], title="LDDGAN Sampler (variations)",
              size=(300, 154), model=(m, 0), latent=(r, 0))
    dv = g.add("LDDGANDecode", (X0 + 680, Y0 + 436), [], size=(240, 66), model=(m, 0), latent=(v, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 552), ["LDDGAN/emoji_variations"], size=(300, MIN_IMAGE_NODE_H),
          images=(dv, 0))
    g.note((X0, Y0 + 156), "Emoji variations: four new emoji (seed 23), then four variations of the first one at "
                           "**denoise 0.5** (its latent re-noised half-way and redrawn; each copy gets its own seed, "
                           "100 + i). Change batch_index to vary another one, or denoise to redraw more or less.\n\n"
                           + EMOJI_NOTE, size=(300, 330))
    return g


def emoji_image_to_image(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (X0, Y0), [EMOJI, "auto", False], size=(300, 106))
    i = g.add("LoadImage", (X0, Y0 + 156), ["example.png", "image"], size=(300, 330))
    e = g.add("LDDGANEncode", (X0 + 340, Y0), ["crop and resize to model size"], size=(300, 90), model=(m, 0),
              image=(i, 0))
    r = g.add("RepeatLatentBatch", (X0 + 340, Y0 + 140), [4], size=(300, 60), samples=(e, 0))
    s = g.add("LDDGANSampler", (X0 + 340, Y0 + 250), [0, "fixed", 1, 0.5], title="LDDGAN Sampler (4 variations)",
              size=(300, 154), model=(m, 0), latent=(r, 0))
    d = g.add("LDDGANDecode", (X0 + 680, Y0), [], size=(240, 66), model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 116), ["LDDGAN/emoji_image_to_image"], size=(300, MIN_IMAGE_NODE_H),
          images=(d, 0))
    g.note((X0 + 680, Y0 + 436), "Your picture, redrawn as an emoji: Load Image (any size; cropped and resized to "
                                 "64 px) is encoded, re-noised half-way (**denoise 0.5**) and redrawn four times. "
                                 "Pictures like an emoji (one object, centred, on white) work best.\n\n" + EMOJI_NOTE,
           size=(300, 330))
    return g


def fixed_seed_batch(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (X0, Y0), [SHIPPED, "auto", False], size=(300, 106))
    s = g.add("LDDGANSampler", (X0 + 340, Y0), [42, "fixed", 8, 1.0], title="LDDGAN Sampler (seed 42, batch 8)",
              size=(300, 154), model=(m, 0))
    d = g.add("LDDGANDecode", (X0 + 680, Y0), [], size=(240, 66), model=(m, 0), latent=(s, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 116), ["LDDGAN/batch_seed42"], size=(240, MIN_IMAGE_NODE_H), images=(d, 0))
    s1 = g.add("LDDGANSampler", (X0 + 340, Y0 + 420), [45, "fixed", 1, 1.0], title="LDDGAN Sampler (seed 45)",
               size=(300, 154), model=(m, 0))
    d1 = g.add("LDDGANDecode", (X0 + 680, Y0 + 420), [], size=(240, 66), model=(m, 0), latent=(s1, 0))
    g.add("SaveImage", (X0 + 680, Y0 + 536), ["LDDGAN/single_seed45"], size=(240, MIN_IMAGE_NODE_H), images=(d1, 0))
    enlarged(g, (d, 0), (X0 + 940, Y0), 8, title="Preview Image (seed 42 batch, 4x)")
    enlarged(g, (d1, 0), (X0 + 940, Y0 + 500), 1, title="Preview Image (seed 45, 4x)")
    g.note((X0, Y0 + 156), "Image i of a batch uses seed + i, so image 3 of the seed-42 batch is the seed-45 image: "
                           "a good picture from a batch is re-made alone from its seed.\n\n" + NOTE, size=(300, 330))
    return g


FINETUNE_NAME = "lddgan_finetune_example"  # models/lddgan/<this>.safetensors (+ the run's files beside it)


def finetune(info):
    g = Graph(info)
    m = g.add("LDDGANModelLoader", (X0, Y0), [SHIPPED, "auto", False], size=(300, 106))
    i = g.add("LoadImage", (X0, Y0 + 156), ["example.png", "image"], size=(300, 330))
    # steps, batch_size, lr_g, lr_d, schedule, gamma, r1_gamma, ema_decay, augment, seed, save_name, save_every,
    # folder, fit; room below the widgets for the live previews
    f = g.add("LDDGANFineTune", (X0 + 340, Y0), [EXAMPLE_STEPS, 4, EXAMPLE_LR_G, 1e-4, "sigmoid", 6.0, 1.0, 0.999, 4, 0,
                                                 FINETUNE_NAME, 0, "", "crop and resize to model size"],
              title="LDDGAN Fine-Tune", size=(320, 560), model=(m, 0), images=(i, 0))
    s = g.add("LDDGANSampler", (X0 + 700, Y0), [0, "fixed", 4, 1.0], size=(300, 154), model=(f, 0))
    d = g.add("LDDGANDecode", (X0 + 700, Y0 + 204), [], size=(300, 66), model=(f, 0), latent=(s, 0))
    g.add("SaveImage", (X0 + 700, Y0 + 320), ["LDDGAN/finetune"], size=(300, MIN_IMAGE_NODE_H), images=(d, 0))
    g.add("PreviewImage", (X0 + 1040, Y0), [], title="Preview Image (loss curve)", size=(420, 270), images=(f, 1))
    g.add("PreviewImage", (X0 + 1040, Y0 + 320), [], title="Preview Image (sample grid)", size=(300, MIN_IMAGE_NODE_H),
          images=(f, 2))
    g.note((X0, Y0 + 536), "Fine-tuning with Weighted Learning: the model is trained on **example.png** (Load Image; "
                           "4 augmented versions) for " + str(EXAMPLE_STEPS) + " iterations at a raised generator learning rate "
                           "(lr_g " + format(EXAMPLE_LR_G, "g") + "; about a minute on a CPU), enough for the samples to take "
                           "on the picture's colours and layout, and saved as models/lddgan/" + FINETUNE_NAME +
                           ".safetensors, which LDDGAN Model Loader lists as soon as the run ends (if it does not, press "
                           "**R** to refresh the node definitions). **Cancel** stops cleanly; queueing again with the same save_name resumes "
                           "(a finished run is returned as it is). For real use, connect your own images or give a "
                           "folder, and raise steps.\n\n" + NOTE, size=(300, 330))
    return g


WORKFLOWS = {"lddgan_generate": generate, "lddgan_image_to_image": image_to_image,
             "lddgan_fixed_seed_batch": fixed_seed_batch, "lddgan_finetune": finetune,
             "lddgan_emoji_variations": emoji_variations, "lddgan_emoji_image_to_image": emoji_image_to_image}
# File names in example_workflows/. ComfyUI's frontend (1.35) reads nothing but the file name for a custom node's
# template: the card's title is the name as it is, its description the name with '-' and '_' turned into spaces
# (no title, description or order can be supplied), and the cards come in the order the server lists the files.
# So the names are the titles. The API twins in tests/workflows/ keep the short ids (the keys).
TITLES = {"lddgan_generate": "LDDGAN Generate", "lddgan_image_to_image": "LDDGAN Image to Image Variations",
          "lddgan_fixed_seed_batch": "LDDGAN Fixed Seed Batch", "lddgan_finetune": "LDDGAN Fine-Tune",
          "lddgan_emoji_variations": "LDDGAN Emoji Variations",
          "lddgan_emoji_image_to_image": "LDDGAN Emoji Image to Image"}
ID = {title: key for key, title in TITLES.items()}  # example file stem -> id (API twin: tests/workflows/<id>.api.json)


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
           "ImageScaleBy": "Upscale Image By",
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
            images = next(im for prefix, im in saved if prefix != "PreviewImage")  # the first SaveImage
            title = TITLES[name]
            for path, text in ((out_examples / f"{title}.json", json.dumps(ui, indent=1)),
                               (out_api / f"{name}.api.json", json.dumps(api, indent=1))):
                path.write_text(text + "\n")
                written.append(str(path))
            draw_graph(ui, 512, 384, images=images).save(out_examples / f"{title}.jpg", quality=90)
            written.append(str(out_examples / f"{title}.jpg"))
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
