"""``lddgan eval``: the parser and command (registered by lddgan_core.cli)."""
from __future__ import annotations

import json
import os
import sys


from ..atomic import atomic_write_text
from ..errors import InputError
from ..eval.classifier import load_classifier
from ..eval.evaluate import evaluate_images, evaluate_model, format_table, K_DC, load_image_folder, MIN_N
from ..hub.shipped import resolve_model_path
from .common import resolve_device


def add_eval_command(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a model or an image folder against held-out shapes data",
                       description="FID, precision/recall, density/coverage (shapes-classifier or Inception "
                                   "features) and mode coverage of a model's samples or of a folder of images, "
                                   "against held-out procedural shapes (seed 1), next to the real-vs-real ceiling "
                                   "(seed 2 vs seed 1, same n).")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="our .safetensors model, a shipped model (shapes, emoji) or a manifest id (default: shapes, the default model)")
    src.add_argument("--images", default=None, metavar="DIR", help="evaluate the images of this folder (recursive) "
                                                                   "instead of a model")
    e.add_argument("--n", type=int, default=None, help="images generated and real (default 5000; with --images: "
                                                       "all images of the folder, or its first N)")
    e.add_argument("--batch", type=int, default=64, help="sampling batch size")
    e.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    e.add_argument("--features", choices=["shapes", "inception"], default="shapes",
                   help="feature space of FID and the k-NN metrics (mode metrics always use the shapes classifier)")
    e.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="local Inception weights (required with --features inception; nothing is downloaded)")
    e.add_argument("--classifier", default=None, metavar="FILE", help="shapes classifier (default: the shipped one)")
    e.add_argument("--json", default=None, metavar="PATH", help="also write the full result as JSON")
    e.set_defaults(fn=cmd_eval)


def _is_emoji_model(path: str) -> bool:
    """A model trained on the emoji data (its recipe's name, or the data source in its provenance). Reads only the
    file's header: the evaluation loads the weights itself."""
    from ..errors import CheckpointError
    from ..formats.lddgan_file import read_model_config

    try:
        cfg = read_model_config(path)
    except CheckpointError:  # not a readable LDDGAN file: the evaluation's own load reports it
        return False
    prov = cfg.get("provenance", {}) or {}
    return str(cfg.get("name", "")).startswith("lddgan-emoji") or \
        isinstance(prov, dict) and prov.get("data_dataset") == "emoji"


def cmd_eval(a) -> int:

    if a.n is not None and a.n < MIN_N:
        raise InputError(f"--n must be >= {MIN_N} (the k-NN metrics need more than {K_DC} samples per set), got {a.n}")
    if a.batch < 1:
        raise InputError(f"--batch must be >= 1, got {a.batch}")
    if a.features == "inception" and not a.inception_weights:
        raise InputError("--features inception needs --inception-weights FILE (a local file; nothing is downloaded)")
    if a.inception_weights and not os.path.isfile(a.inception_weights):
        raise InputError(f"--inception-weights: file {a.inception_weights!r} does not exist")
    device = resolve_device(a.device)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    classifier = None
    if a.classifier:

        classifier = load_classifier(a.classifier, device=device)
    kw = dict(features=a.features, inception_weights=a.inception_weights, classifier=classifier, log=log)
    if a.images:
        images = load_image_folder(a.images, a.n)
        result = evaluate_images(images, device=device, source=os.path.abspath(a.images), **kw)
    else:
        path = resolve_model_path(a.model)
        if _is_emoji_model(path):  # an emoji model is judged against the emoji data, in the emoji classifier's space
            from ..eval.emoji_eval import evaluate_emoji_model, format_report

            log(f"{path}: an emoji model; evaluating against the emoji data (lddgan_core.eval.emoji_eval)")
            result, _ = evaluate_emoji_model(path, 1000 if a.n is None else a.n, a.seed, a.batch, log=log)
            print(format_report(result))
            if a.json:
                atomic_write_text(a.json, json.dumps(result, indent=1) + "\n")
                print(f"wrote {a.json}")
            return 0
        result = evaluate_model(path, n=5000 if a.n is None else a.n, seed=a.seed, batch=a.batch, device=device, **kw)
    print(format_table(result))
    if a.json:
        atomic_write_text(a.json, json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0
