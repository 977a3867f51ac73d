"""Offline evaluation of a model or a set of images against held-out procedural shapes data.

    from lddgan_core.eval import evaluate_model, evaluate_images
    r = evaluate_model(model, n=5000, seed=0)      # an LDDGAN or a model path
    r["generated"]["fid"], r["ceiling"]["fid"]     # model vs held-out data, and real vs real

Generated images are quantized to 8 bits (as a saved PNG would be), then featurized by the shapes classifier
(lddgan_core.eval.classifier: 128-d features, predicted modes, confidence) or, with features="inception", by
an Inception network loaded from a local file (mode metrics still come from the shapes classifier; a sample
whose top class probability is below MIN_CONFIDENCE counts as "unrecognised", not as a mode). They are
compared with n held-out real images (shapes seed 1). The same metrics for n other held-out images (seed 2)
against seed 1 give the "ceiling": what a perfect generator would score with this n, since FID and the k-NN
metrics are biased at finite n.
"""
from __future__ import annotations

import collections
import os
import time

import torch

from ..data.images import quantize
from ..data.shapes import HELDOUT_SEED, make_shapes, mode_images, NUM_MODES
from ..errors import InputError, LDDGANError
from ..model import LDDGAN, load_model
from ..train.data import find_images
from . import metrics as M
from .classifier import load_classifier

REAL_SEED = HELDOUT_SEED  # the held-out data generated images are compared with
CEILING_SEED = HELDOUT_SEED + 1  # a second held-out set: real vs real
REAL_SIZE = 32  # the shapes data's resolution
MIN_N = 10  # k-NN metrics need more than k_dc = 5 samples per set
K_PR, K_DC = 3, 5  # k of precision/recall (Kynkäänniemi et al.) and of density/coverage (Naeem et al.)
# a sample counts for its predicted mode only when the classifier's top probability reaches this; below it is
# "unrecognised" (the classifier is trained towards the uniform prediction on images without a shape)
MIN_CONFIDENCE = 0.5
FEATURES = ("shapes", "inception")
INCEPTION_BATCH = 50  # images per Inception forward (it works at 299x299: activations of ~30 MB per image)

METRIC_KEYS = ("fid", "precision", "recall", "density", "coverage", "modes_covered", "modes_covered_at_threshold",
               "kl_gen_data", "kl_data_gen", "unrecognised", "mean_confidence")


class _LRU(collections.OrderedDict):
    """A small in-process cache (held-out data and its features are reused across calls, e.g. in an ablation)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return self.put(key, make())

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


_REAL_IMAGES = _LRU(4)  # (seed, size) -> (uint8 [n, 3, s, s], modes [n]) for the largest n made so far
_REAL_FEATURES = _LRU(8)  # (seed, size, n, featurizer key) -> featurized dict
_INCEPTION = _LRU(1)  # (file, mtime, device) -> the Inception feature network
_CLASSIFIERS = _LRU(2)  # device -> the shipped classifier (one object, so its features stay cached)


def default_classifier(device="cpu"):
    """The shipped shapes classifier on `device`, loaded once per process."""

    return _CLASSIFIERS.get_or(str(torch.device(device)), lambda: load_classifier(device=device))


def real_images(n: int, seed: int, size: int = REAL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n shapes images of dataset `seed` (uint8 [n, 3, size, size]) and their true modes [n]; cached
    (make_shapes(n)[:k] == make_shapes(k), so a bigger cached set serves smaller requests)."""
    have = _REAL_IMAGES.get((seed, size))
    if have is None or have[0].shape[0] < n:
        images, labels = make_shapes(n, seed=seed, size=size)
        have = _REAL_IMAGES.put((seed, size), (images, labels["mode"]))
    return have[0][:n], have[1][:n]


# -- feature extractors ------------------------------------------------------------------------------------
class Featurizer:
    """Images -> {features [N, D], modes [N], confidence [N]}: modes and confidence (max softmax probability)
    always come from the shapes classifier; features from it (features="shapes") or from an Inception network."""

    def __init__(self, features: str = "shapes", classifier=None, inception_weights: str | None = None,
                 device="cpu", batch: int = 250):
        if features not in FEATURES:
            raise InputError(f"features must be one of {list(FEATURES)}, got {features!r}")
        self.kind, self.device, self.batch = features, torch.device(device), batch
        self.inception = None
        if features == "inception":
            self.inception = load_inception_features(inception_weights, device)
        self.classifier = classifier if classifier is not None else default_classifier(device)
        self.classifier = self.classifier.to(self.device).eval()
        # the objects themselves (hashed by identity, kept alive while cached) and the weights file
        self.key = (features, self.classifier, self.inception, os.fspath(inception_weights or ""))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [N, 3, H, W] -> features float32 [N, D], modes int64 [N], confidence float32 [N] (CPU)."""
        feats, logits = self.classifier.run(images, self.batch)
        if self.inception is not None:
            outs = []
            for chunk in images.split(INCEPTION_BATCH):
                x = chunk.to(self.device).float() / 127.5 - 1
                outs.append(self.inception(x).float().cpu().reshape(x.shape[0], -1))
            feats = torch.cat(outs) if outs else torch.zeros(0, 2048)
        p = logits.softmax(1)
        return {"features": feats, "modes": p.argmax(1), "confidence": p.max(1).values}


def load_inception_features(path: str | None, device="cpu"):
    """The Inception feature network from a local weights file (never downloaded); loaded once per process
    for each (file, device)."""
    if not path:
        raise InputError("features='inception' needs a local Inception weights file (--inception-weights FILE); "
                         "nothing is downloaded")
    if not os.path.isfile(path):
        raise InputError(f"Inception weights file {os.fspath(path)!r} does not exist")
    try:
        from .inception import load_inception
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("inception"):
            raise LDDGANError("Inception features are not available in this install "
                              "(lddgan_core/eval/inception.py is missing); use features='shapes'") from None
        raise
    key = (os.path.abspath(path), os.stat(path).st_mtime_ns, str(torch.device(device)))
    return _INCEPTION.get_or(key, lambda: load_inception(path, device=device).eval())


# -- comparisons ---------------------------------------------------------------------------------------------
def _labels(s: dict) -> torch.Tensor:
    """Predicted modes, UNRECOGNISED where the classifier's confidence is below MIN_CONFIDENCE."""
    return torch.where(s["confidence"] >= MIN_CONFIDENCE, s["modes"], torch.full_like(s["modes"], M.UNRECOGNISED))


def compare(gen: dict, real: dict, num_modes: int = NUM_MODES) -> dict:
    """All metrics of a featurized generated set against a featurized real set (see lddgan_core.eval.metrics)."""
    if "fid_stats" not in real:  # the real set's Gaussian fit and its square root, reused across comparisons
        mu, sigma = M.gaussian_stats(real["features"])
        real["fid_stats"] = (mu, sigma, M.psd_sqrt(sigma))
    mu, sigma, root = real["fid_stats"]
    if gen["features"].shape[1] != mu.shape[0]:
        raise InputError(f"feature sizes differ: real D={mu.shape[0]}, generated D={gen['features'].shape[1]}")
    out = {"fid": M.frechet_distance(mu, sigma, *M.gaussian_stats(gen["features"]), sqrt_sigma1=root)}
    out.update(M.manifold_metrics(real["features"], gen["features"], k_pr=K_PR, k_dc=K_DC))
    mm = M.mode_metrics(_labels(gen), _labels(real), num_modes)
    out.update({k: mm[k] for k in ("modes_covered", "modes_covered_at_threshold", "kl_gen_data", "kl_data_gen")})
    out["unrecognised"] = mm["unrecognised_gen"]
    out["mean_confidence"] = float(gen["confidence"].double().mean())
    out["histogram"] = mm["histogram_gen"]
    return out


def _check_n(n, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_N:
        raise InputError(f"{what} must be an integer >= {MIN_N} (the k-NN metrics need more than {K_DC} samples "
                         f"per set), got {n!r}")
    return n


def _against_heldout(gen: dict, n: int, featurizer: Featurizer, log) -> dict:
    """Compare `gen` with held-out seed REAL_SEED and add the real-vs-real ceiling (seed CEILING_SEED)."""
    t0 = time.perf_counter()
    sets = {}
    for seed in (REAL_SEED, CEILING_SEED):
        def make(seed=seed):
            images, true_modes = real_images(n, seed)
            return dict(featurizer(images), true_modes=true_modes)
        sets[seed] = _REAL_FEATURES.get_or((seed, REAL_SIZE, n) + featurizer.key, make)
    real, other = sets[REAL_SEED], sets[CEILING_SEED]
    t_real = time.perf_counter() - t0
    log(f"held-out data (shapes seeds {REAL_SEED}, {CEILING_SEED}; {n} each) ready in {t_real:.1f} s")
    t1 = time.perf_counter()
    result = {"generated": compare(gen, real), "ceiling": compare(other, real),
              "real_histogram": M.mode_histogram(_labels(real), NUM_MODES)[:NUM_MODES].tolist()}
    acc = float((real["modes"] == real["true_modes"]).double().mean())
    c = featurizer.classifier
    result["classifier"] = {"path": getattr(c, "path", None), "accuracy_on_real": acc,
                            "heldout_accuracy": getattr(c, "info", {}).get("heldout_accuracy")}
    result["timing"] = {"real_s": t_real, "metrics_s": time.perf_counter() - t1}
    return result


def _settings(featurizer: Featurizer, n: int) -> dict:
    return {"features": featurizer.kind, "n": n, "real_seed": REAL_SEED, "ceiling_seed": CEILING_SEED,
            "num_modes": NUM_MODES, "mode_threshold": M.MODE_THRESHOLD, "min_confidence": MIN_CONFIDENCE,
            "kl_eps": M.KL_EPS, "k_pr": K_PR, "k_dc": K_DC}


def checked_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 as is; float in [-1, 1] -> uint8 (rounded, like a saved PNG), on the CPU."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images: expected a tensor [N, 3, H, W], got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if images.dtype == torch.uint8:
        return images.cpu()
    if not images.is_floating_point():
        raise InputError(f"images: expected uint8 or float in [-1, 1], got {images.dtype}")
    x = images.detach().float()
    if not torch.isfinite(x).all():
        raise InputError("images: contain NaN or infinite values")
    if x.numel() and (x.min() < -1.5 or x.max() > 1.5):
        raise InputError(f"images: float images must lie in [-1, 1], got {x.min().item():.3g}..{x.max().item():.3g}")
    return quantize(x)


# -- public API ------------------------------------------------------------------------------------------------
def evaluate_images(images: torch.Tensor, *, features: str = "shapes", inception_weights: str | None = None,
                    classifier=None, device="cpu", featurizer: Featurizer | None = None, source: str = "(in memory)",
                    log=None) -> dict:
    """Evaluate a set of images (uint8 [N, 3, H, W], or float in [-1, 1], N >= 10) against the first N held-out
    shapes images, plus the real-vs-real ceiling with the same N. Returns a JSON-ready dict (see evaluate_model)."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    images = checked_uint8(images)
    n = _check_n(images.shape[0], "the number of images")
    fz = featurizer or Featurizer(features, classifier, inception_weights, device)
    t1 = time.perf_counter()
    gen = fz(images)
    t_feat = time.perf_counter() - t1
    result = {"what": "images", "source": source, **_settings(fz, n), "feature_dim": gen["features"].shape[1],
              "image_size": list(images.shape[2:])}
    result.update(_against_heldout(gen, n, fz, log))
    result["timing"].update(features_s=t_feat, total_s=time.perf_counter() - t0)
    return result


def evaluate_model(model, *, n: int = 5000, seed: int = 0, batch: int = 64, features: str = "shapes",
                   inception_weights: str | None = None, classifier=None, device=None,
                   featurizer: Featurizer | None = None, log=None) -> dict:
    """Sample n images (seeds seed..seed+n-1, `batch` at a time, model.sample(seeds=...) then decode), and
    evaluate them like evaluate_images. `model` is an LDDGAN (used on its own device) or a model path (loaded on
    `device`, default cpu). Pass one `featurizer` to several calls to share the classifier / Inception network
    (the held-out data and its features are cached in the process either way).

    Returns {"what", "source", settings..., "generated": {metric: value, "histogram": [...]},
    "ceiling": {same for held-out seed 2 vs seed 1}, "real_histogram", "classifier", "sampling": {"images",
    "seconds", "images_per_s", "batch", "device"}, "timing"}; metrics are METRIC_KEYS.
    """

    log = log or (lambda m: None)
    t0 = time.perf_counter()
    n = _check_n(n)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    source = None
    if not isinstance(model, LDDGAN):

        source = os.fspath(model)
        model = load_model(source, device=device or "cpu")
    dev = model.device
    fz = featurizer or Featurizer(features, classifier, inception_weights, dev)
    parts, t_sample, t_feat = [], 0.0, 0.0
    for start in range(0, n, batch):
        seeds = list(range(seed + start, seed + min(start + batch, n)))
        ts = time.perf_counter()
        images = checked_uint8(model.decode(model.sample(seeds=seeds)).clamp(-1, 1))
        t_sample += time.perf_counter() - ts
        tf = time.perf_counter()
        parts.append(fz(images))
        t_feat += time.perf_counter() - tf
        if start == 0 or (start // batch + 1) % 20 == 0:
            log(f"sampled {min(start + batch, n)}/{n} ({min(start + batch, n) / max(t_sample, 1e-9):.0f} images/s)")
    gen = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    result = {"what": "model", "source": source or model.config.name, **_settings(fz, n),
              "feature_dim": gen["features"].shape[1], "seed": seed,
              "image_size": model.config.image_size,
              "sampling": {"images": n, "seconds": t_sample, "images_per_s": n / max(t_sample, 1e-9), "batch": batch,
                           "device": str(dev)}}
    result.update(_against_heldout(gen, n, fz, log))
    result["timing"].update(sample_s=t_sample, features_s=t_feat, total_s=time.perf_counter() - t0)
    return result


# -- image folders -------------------------------------------------------------------------------------------
def _mode_samples(model, n: int, seed: int, batch: int) -> torch.Tensor:
    """n samples (seeds seed..seed+n-1, `batch` at a time) as uint8 [n, 3, H, W] on the CPU."""
    parts = []
    for start in range(0, n, batch):
        seeds = list(range(seed + start, seed + min(n, start + batch)))
        with torch.no_grad():
            parts.append(quantize(model.decode(model.sample(seeds=seeds)).float().cpu()))
    return torch.cat(parts)


def evaluate_mode(model, mode: int, *, n: int = 1000, seed: int = 0, real_seed: int = 1, batch: int = 64,
                  featurizer: Featurizer | None = None) -> dict:
    """A model fine-tuned on one shapes mode against n held-out images of that mode (dataset `real_seed`):
    "in_mode" = share of n samples (seeds seed..seed+n-1) the classifier assigns to `mode` with confidence >= 0.5,
    plus FID / precision / recall / density / coverage in the classifier's feature space."""
    n = _check_n(n)
    fz = featurizer or Featurizer("shapes", device=model.device)
    gen = fz(_mode_samples(model, n, seed, batch))
    real = fz(mode_images(mode, n, real_seed))
    out = {k: v for k, v in compare(gen, real).items() if k != "histogram"}
    ok = (gen["modes"] == mode) & (gen["confidence"] >= MIN_CONFIDENCE)
    out.update(mode=mode, n=n, in_mode=float(ok.double().mean()))
    return out


def _check_modes(modes, batch: int) -> list[int]:
    """`modes` (a mode or a non-empty list of them) as a list of ints 0..15; `batch` a positive int."""
    if isinstance(modes, (int, str, bytes)) or not hasattr(modes, "__iter__"):
        modes = [modes]
    modes = list(modes)
    if not modes:
        raise InputError("modes: expected a mode 0..15 or a non-empty list of them, got none")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    for mode in modes:
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode < NUM_MODES:
            raise InputError(f"mode must be an integer 0..{NUM_MODES - 1}, got {mode!r}")
    return modes


def mode_ceiling(model, modes, *, pool: int = 8000, n_real: int = 1000, seed: int = 0, real_seed: int = 1,
                 batch: int = 64, featurizer: Featurizer | None = None) -> list[dict]:
    """What a model's own samples of each shapes mode in `modes` (an int or a list) score against held-out images
    of that mode, before any fine-tuning: `pool` samples (seeds seed..seed+pool-1, drawn once for all modes), of
    which those the classifier assigns to the mode with confidence >= 0.5 ("kept") are compared with n_real
    held-out images of the mode (dataset `real_seed`) like evaluate_mode. A fine-tune that only selects the mode
    from the model's repertoire scores about this; beating it needs the fine-tune to redraw the shapes. One dict
    per mode; its metrics are None when fewer than the k-NN minimum are kept."""
    modes = _check_modes(modes, batch)
    pool, n_real = _check_n(pool, "pool"), _check_n(n_real, "n_real")
    fz = featurizer or Featurizer("shapes", device=model.device)
    gen = fz(_mode_samples(model, pool, seed, batch))
    rows = []
    for mode in modes:
        ok = (gen["modes"] == mode) & (gen["confidence"] >= MIN_CONFIDENCE)
        out = {"mode": mode, "pool": pool, "kept": int(ok.sum()), "n_real": n_real}
        if out["kept"] < MIN_N:
            out.update({k: None for k in ("fid", "precision", "recall", "density", "coverage")})
        else:
            metrics = compare({k: v[ok] for k, v in gen.items()}, fz(mode_images(mode, n_real, real_seed)))
            out.update({k: v for k, v in metrics.items() if k != "histogram"})
        rows.append(out)
    return rows


def mode_references(model, modes, *, n_real: int = 1000, real_seed: int = 1, data_seed: int = 5, batch: int = 64,
                    featurizer: Featurizer | None = None) -> list[dict]:
    """The two upper bounds for a fine-tune on one shapes mode, scored like evaluate_mode against n_real held-out
    images of the mode (dataset `real_seed`): "real" = n_real other real images of the mode (dataset `data_seed`,
    where finetune-mode takes its training images), the k-NN metrics' own ceiling; "autoencoder" = the same images
    through the model's autoencoder (encode, decode), what a generator that drew the data's latents exactly would
    score. Two dicts per mode (key "source"), in the order of `modes`."""
    modes = _check_modes(modes, batch)
    n_real = _check_n(n_real, "n_real")
    fz = featurizer or Featurizer("shapes", device=model.device)
    rows = []
    for mode in modes:
        real = fz(mode_images(mode, n_real, real_seed))
        other = mode_images(mode, n_real, data_seed)
        parts = []
        for start in range(0, n_real, batch):
            x = (other[start:start + batch].float() / 127.5 - 1).to(model.device)
            with torch.no_grad():
                parts.append(quantize(model.decode(model.encode(x)).float().cpu()))
        for source, images in (("real", other), ("autoencoder", torch.cat(parts))):
            metrics = compare(fz(images), real)
            rows.append({"mode": mode, "source": source, "n_real": n_real,
                         **{k: v for k, v in metrics.items() if k != "histogram"}})
    return rows


def load_image_folder(folder: str, n: int | None = None) -> torch.Tensor:
    """The images of a folder (recursive, sorted paths; png / jpg / webp) as uint8 [N, 3, H, W], the first n
    when n is given. All must have the same size."""
    import numpy as np
    from PIL import Image


    paths = find_images(folder)
    if n is not None:
        if len(paths) < n:
            raise InputError(f"image folder {os.fspath(folder)!r} holds {len(paths)} images, fewer than --n {n}")
        paths = paths[:n]
    out, bad = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
        except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
            bad.append(f"{p}: {type(e).__name__}: {e}")
    if bad:
        raise InputError(f"image folder {os.fspath(folder)!r}: {len(bad)} file(s) could not be read:\n  "
                         + "\n  ".join(bad[:20]))
    sizes = collections.Counter(tuple(x.shape[1:]) for x in out)
    if len(sizes) > 1:
        first = {}
        for p, x in zip(paths, out):
            first.setdefault(tuple(x.shape[1:]), p)
        raise InputError(f"image folder {os.fspath(folder)!r}: images differ in size: "
                         + ", ".join(f"{h}x{w} ({c} files, e.g. {first[(h, w)]})" for (h, w), c in sizes.items()))
    return torch.stack(out)


ROWS = (("fid", "FID (lower is better)", "{:.3f}"), ("precision", "precision", "{:.3f}"),
        ("recall", "recall", "{:.3f}"), ("density", "density", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
        ("modes_covered", "modes covered (of {m})", "{}"),
        ("modes_covered_at_threshold", "modes >= {t:g}% of uniform share", "{}"),
        ("kl_gen_data", "KL(gen || data) of modes", "{:.4f}"), ("kl_data_gen", "KL(data || gen) of modes", "{:.4f}"),
        ("unrecognised", "unrecognised (confidence < {c:g})", "{:.3f}"),
        ("mean_confidence", "mean classifier confidence", "{:.3f}"))


def format_table(result: dict) -> str:
    """The readable summary `lddgan eval` prints."""
    left = "model vs held-out" if result["what"] == "model" else "images vs held-out"
    labels = [lab.format(m=result["num_modes"], t=100 * result["mode_threshold"], c=result["min_confidence"])
              for _, lab, _ in ROWS]
    w = max(len(s) for s in labels + ["metric"])
    lines = [f"{'metric':<{w}} | {left:>18} | {'real vs real (ceiling)':>22}", f"{'-' * w}-+-{'-' * 18}-+-{'-' * 22}"]
    for (key, _, fmt), label in zip(ROWS, labels):
        lines.append(f"{label:<{w}} | {fmt.format(result['generated'][key]):>18} | "
                     f"{fmt.format(result['ceiling'][key]):>22}")
    head = (f"{result['what']} {result['source']}: n={result['n']}, {result['features']} features, held-out shapes "
            f"seed {result['real_seed']} (ceiling: seed {result['ceiling_seed']} vs {result['real_seed']})")
    tail = []
    if "sampling" in result:
        s = result["sampling"]
        tail.append(f"sampling: {s['images_per_s']:.1f} images/s end to end ({s['images']} images in "
                    f"{s['seconds']:.1f} s, batch {s['batch']}, {s['device']})")
    acc = result["classifier"]["accuracy_on_real"]
    tail.append(f"shapes classifier accuracy on the held-out data: {100 * acc:.2f}%")
    return "\n".join([head, *lines, *tail])
