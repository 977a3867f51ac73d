"""Workflow helpers shared by the example-workflow builder and the tests (no ComfyUI needed):

* ``object_info_for(classes)``: the /object_info entries ComfyUI derives from V1 node classes;
  ``CORE_OBJECT_INFO``: the same for the few core nodes the examples use (checked against a real
  ComfyUI by tests/nodes/test_nodes_comfyui.py).
* ``ui_to_api(ui, object_info)``: editor (UI) graph -> API prompt, reading widget values positionally as the
  frontend stores them (a seed's ``control_after_generate`` and an image upload button take an extra slot).
* ``run_offline(api, ...)``: runs an API prompt with the pack's node classes and small stand-ins for those
  core nodes, so example workflows run end to end in CI without ComfyUI.
"""
from __future__ import annotations

import os

import numpy as np
import torch

VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # frontend-only, not sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

# Input layout of the core nodes the examples use, as ComfyUI's /object_info reports it (input_order and the
# specs that decide widget slots). Types only; tooltips omitted.
CORE_OBJECT_INFO = {
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}],
                                         "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_name": []},
    "PreviewImage": {"input": {"required": {"images": ["IMAGE", {}]}}, "input_order": {"required": ["images"]},
                     "output": [], "output_name": []},
    "LoadImage": {"input": {"required": {"image": [[], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"],
                  "output_name": ["IMAGE", "MASK"]},
    "RepeatLatentBatch": {"input": {"required": {"samples": ["LATENT", {}], "amount": ["INT", {"default": 1}]}},
                          "input_order": {"required": ["samples", "amount"]}, "output": ["LATENT"],
                          "output_name": ["LATENT"]},
    "LatentFromBatch": {"input": {"required": {"samples": ["LATENT", {}], "batch_index": ["INT", {"default": 0}],
                                               "length": ["INT", {"default": 1}]}},
                        "input_order": {"required": ["samples", "batch_index", "length"]}, "output": ["LATENT"],
                        "output_name": ["LATENT"]},
    "ImageScaleBy": {"input": {"required": {"image": ["IMAGE", {}],
                                            "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic",
                                                                "lanczos"], {}],
                                            "scale_by": ["FLOAT", {"default": 1.0}]}},
                     "input_order": {"required": ["image", "upscale_method", "scale_by"]}, "output": ["IMAGE"],
                     "output_name": ["IMAGE"]},
    "VAEDecode": {"input": {"required": {"samples": ["LATENT", {}], "vae": ["VAE", {}]}},
                  "input_order": {"required": ["samples", "vae"]}, "output": ["IMAGE"], "output_name": ["IMAGE"]},
}


def object_info_for(classes: dict) -> dict:
    """{node id: {"input", "input_order", "output", "output_name"}} for V1 node classes."""
    info = {}
    for name, cls in classes.items():
        inputs = cls.INPUT_TYPES()
        info[name] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items() if k != "hidden"},
                      "output": list(cls.RETURN_TYPES),
                      "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
    return info


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_slots(spec) -> int:
    """Widget values the frontend stores after this input's own value."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return int(bool(opts.get("control_after_generate") or opts.get("image_upload")))


def widget_inputs(entry: dict) -> list[tuple[str, list]]:
    """(name, spec) of the widget inputs of one /object_info entry, in widget order."""
    out = []
    for group in ("required", "optional"):
        for name in entry.get("input_order", {}).get(group, []):
            spec = entry["input"][group][name]
            if _is_widget(spec):
                out.append((name, spec))
    return out


def _source(link, links, by_id):
    """[node id, slot] feeding a link, looking through Reroute nodes; None for a PrimitiveNode."""
    while True:
        src = by_id[link[1]]
        if src["type"] == "PrimitiveNode":
            return None
        if src["type"] != "Reroute":
            return [str(link[1]), link[2]]
        link = links[src["inputs"][0]["link"]]


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Editor graph (``nodes`` / ``links``) -> API prompt ``{id: {class_type, inputs, _meta}}``."""
    links = {l[0]: l for l in ui["links"]}  # [id, from_node, from_slot, to_node, to_slot, type]
    by_id = {n["id"]: n for n in ui["nodes"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) == 2:  # notes; muted nodes
            continue
        if node.get("mode", 0) == 4:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; not supported by this converter")
        entry = object_info.get(node["type"])
        if entry is None:
            raise KeyError(f"node {node['id']}: type {node['type']!r} is not in /object_info (pack not loaded?)")
        values, inputs, pos = list(node.get("widgets_values") or []), {}, 0
        for name, spec in widget_inputs(entry):
            if pos >= len(values):
                # a workflow saved before this optional widget existed: the editor fills in its default
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if "default" not in opts or name not in entry.get("input_order", {}).get("optional", []):
                    raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}")
                inputs[name] = opts["default"]
                pos += 1
                continue
            inputs[name] = values[pos]
            pos += 1 + _extra_slots(spec)
        for inp in node.get("inputs") or []:  # links win over widget values (a widget converted to an input)
            if inp.get("link") is not None:
                src = _source(links[inp["link"]], links, by_id)
                if src is not None:  # None: a PrimitiveNode, whose value the editor keeps in the widget
                    inputs[inp["name"]] = src
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or node["type"]}}
    return api


# -- offline execution ---------------------------------------------------------------------------------------
def _load_image(path: str) -> torch.Tensor:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)[None]  # [1, H, W, 3]


def _stand_ins(input_dir: str, saved: list):
    """Minimal equivalents of the core nodes the examples use (same inputs, same outputs)."""
    def save_image(images, filename_prefix):
        saved.append((filename_prefix, images))
        return ()

    def preview_image(images):
        saved.append(("PreviewImage", images))  # ComfyUI shows it (a temp file); recorded like a save here
        return ()

    def load_image(image):
        x = _load_image(os.path.join(input_dir, image))
        return x, torch.zeros(1, x.shape[1], x.shape[2])

    def repeat_latent_batch(samples, amount):
        out = dict(samples, samples=samples["samples"].repeat(amount, 1, 1, 1))
        if "batch_index" in samples:
            idx = samples["batch_index"]
            span = max(idx) - min(idx) + 1
            out["batch_index"] = idx + [i + r * span for r in range(1, amount) for i in idx]
        return (out,)

    def latent_from_batch(samples, batch_index, length):
        x = samples["samples"]
        start = min(x.shape[0] - 1, batch_index)
        stop = min(x.shape[0], start + length)
        idx = samples.get("batch_index", list(range(x.shape[0])))
        return ({"samples": x[start:stop].clone(), "batch_index": idx[start:stop]},)

    def image_scale_by(image, upscale_method, scale_by):
        if upscale_method != "nearest-exact":
            raise ValueError(f"run_offline: ImageScaleBy stand-in only does nearest-exact, not {upscale_method!r}")
        h, w = round(image.shape[1] * scale_by), round(image.shape[2] * scale_by)
        return (torch.nn.functional.interpolate(image.movedim(-1, 1), size=(h, w), mode="nearest-exact")
                .movedim(1, -1),)

    return {"SaveImage": save_image, "PreviewImage": preview_image, "LoadImage": load_image,
            "ImageScaleBy": image_scale_by,
            "RepeatLatentBatch": repeat_latent_batch, "LatentFromBatch": latent_from_batch}


def run_offline(api: dict, node_classes: dict, input_dir: str) -> list[tuple[str, torch.Tensor]]:
    """Execute an API prompt (nodes in id order); returns the (filename_prefix, IMAGE) pairs SaveImage nodes
    received, and ("PreviewImage", IMAGE) for PreviewImage nodes."""
    saved: list = []
    core = _stand_ins(input_dir, saved)
    results: dict[str, tuple] = {}

    def value(v):
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int):
            return run(v[0])[v[1]]
        return v

    def run(nid: str):
        if nid not in results:
            node = api[nid]
            kwargs = {k: value(v) for k, v in node["inputs"].items()}
            if node["class_type"] in node_classes:
                cls = node_classes[node["class_type"]]
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
                results[nid] = out["result"] if isinstance(out, dict) else out
            elif node["class_type"] in core:
                results[nid] = core[node["class_type"]](**kwargs)
            else:
                raise KeyError(f"run_offline: no stand-in for core node {node['class_type']!r}")
        return results[nid]

    for nid in sorted(api, key=int):
        run(nid)
    return saved
