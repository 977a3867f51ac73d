"""Evaluation of emoji pictures (e.g. samples of a model trained on lddgan_core.data.emoji) against the emoji data:
sample quality in the emoji classifier's feature space, the group histogram, and a memorisation check.

    from lddgan_core.eval.emoji_eval import evaluate_emoji_images, closest_pairs_grid
    r = evaluate_emoji_images(samples_uint8, details=True)       # uint8 [N, 3, H, W] (or float in [-1, 1])
    r["vs_heldout"]["generated"]["fid"], r["vs_heldout"]["ceiling"]["fid"]
    r["memorisation"]["pixel"]["frac_closer_than_heldout_p5"]  # ~0.05 for a generator that does not copy
    grid = closest_pairs_grid(samples_uint8, r["details"])       # uint8 [H, W, 3]: the 16 closest pairs

    python -m lddgan_core.eval.emoji_eval --folder SAMPLES_DIR --grid pairs.png   # or --heldout: the baseline

Feature metrics (lddgan_core.eval.metrics: FID, precision/recall k=3, density/coverage k=5) use the pooled 128-d
features of the emoji classifier (lddgan_core.eval.emoji_classifier), against two references, each with its
real-vs-real ceiling at the same set sizes (FID and the k-NN metrics are biased at small n, so only the
ceiling makes a figure readable):
  vs_heldout  the first n samples against the 239 held-out emoji (real emoji the generator never saw);
              ceiling: n training emoji (a fixed random subset) against the same held-out set
  vs_train    the first n samples against the 1,370 training emoji; ceiling: the first n held-out emoji
with n = min(number of samples, number of held-out emoji): at most 239, so these figures are noisy; the
result states every n. Group histogram: the classifier's predicted groups of all samples against its
predictions on the training split (the data the generator learnt), KL(gen || data) and KL(data || gen);
the ceiling is the held-out split's predicted histogram.

Sharpness: the classifier's features are trained to ignore blur (its augmentation), so a model that draws
emoji-coloured blobs can score a high precision in them (an untrained generator's samples did: 1.0). The
"sharpness" entry therefore measures detail directly: edge_energy, the mean absolute difference between
neighbouring grey levels of a picture; its median over the samples against the held-out emoji's median
(ratio_to_heldout: about 1 for pictures as detailed as real emoji, well below 1 for blur; noise would push it
above 1, so it is read with the picture). For a model, also the held-out emoji passed through its autoencoder:
the detail the generator could draw at best in that latent space.

Memorisation check: for each sample, the distance to its nearest TRAINING image; the same for each HELD-OUT
emoji (the baseline: other emoji drawn in the same style, which no one copied). Pixel space is primary:
the RMS difference over pixels and channels in [0, 1] at 64 px (the unit of lddgan_core.data.emoji's
measurements). A copy is a copy in pixels; the classifier's features are trained to be invariant to shifts,
scale, colour and blur, so in them a close distance means "the same kind of emoji" as much as "the same
picture", and two different smileys can be near. Both are reported. The samples are flagged against the
held-out distribution: frac_closer_than_heldout_p5 is the share of samples nearer to a training image than
the 5th percentile of the held-out distances (about 0.05 when samples are as novel as new emoji; much more
means copying), frac_copies the share nearer than ANY held-out emoji is (about 1 / (n_heldout + 1) ~ 0.004 for
a sample as novel as a held-out emoji; held-out emoji that the font draws exactly like a training emoji are
left out of both thresholds and counted as heldout_duplicates, see memorisation_check). Emoji are all centred
on white, so a copy is pixel-aligned; a copy shifted by a few pixels would escape the pixel test but not the
feature test.

Baseline, measured with the shipped classifier (the held-out split as the "samples", ``--heldout``):

  feature metrics (n = 238)        FID    precision  recall  density  coverage
    ceiling vs held-out           7.19      0.874    0.929    0.841    0.929   (238 train emoji vs held-out)
    ceiling vs train              4.36      0.916    0.892    1.034    0.545   (held-out vs 1,370 train emoji)
  groups: KL(held-out || train) of predicted groups 0.018; 8 of 9 groups, 68 subgroups predicted
  nearest training image, pixel RMS: p5 0.080, median 0.169; the nearest of all is 0.032 ("woman superhero" /
    "superhero"), the copy threshold. (The font draws "family: man, man, boy" exactly as "family"; the data
    module now drops such exact duplicates, so no held-out emoji is a training picture; memorisation_check
    still guards against it: heldout_duplicates.)
  nearest training image, features: p5 0.64, median 4.27

The pixel distance is blind to meaning where pictures are mostly white: the 16th closest held-out pair is a
bone and a small white square (0.09). In the closest pairs, the held-out emoji are gender or number variants
of a training emoji (superhero, firefighter, astronaut, mage; 1st / 3rd place medal; arrows): a sample that
looks like a training emoji is not a copy by itself, the distribution of distances against this baseline is
the test.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from . import metrics as M
from .evaluate import _LRU, checked_uint8

PIXEL_SIZE = 64  # the pixel space of the memorisation check (and the dataset's default size)
MIN_N = 10  # k-NN metrics need more than K_DC samples per set
K_PR, K_DC = 3, 5  # as in lddgan_core.eval.evaluate
COPY_PERCENTILE = 5.0  # frac_closer_than_heldout_p5: the held-out distances' percentile samples are held against
CEILING_SUBSET_SEED = 0  # which training emoji form the ceiling of vs_heldout
DUPLICATE_RMS = 0.5 / 255  # a held-out emoji this near (pixel RMS) to a training emoji is the same picture
CANDIDATES = 8  # nearest neighbours: the best candidates of a float32 search, then exact distances
SPACES = ("pixel", "features")

_CLASSIFIERS = _LRU(2)  # device -> the shipped emoji classifier
_IMAGES = _LRU(2)  # (size, font, emoji_test) -> the rendered splits
_REAL = _LRU(2)  # (classifier, size, font, emoji_test) -> the featurized train and held-out splits


def default_classifier(device="cpu"):
    """The shipped emoji classifier on `device`, loaded once per process."""
    from .emoji_classifier import load_classifier

    return _CLASSIFIERS.get_or(str(torch.device(device)), lambda: load_classifier(device=device))


def resize_uint8(images: torch.Tensor, size: int = PIXEL_SIZE) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, size, size] (bilinear, antialiased; unchanged at that size)."""
    if tuple(images.shape[2:]) == (size, size):
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def pixel_vectors(images: torch.Tensor, size: int = PIXEL_SIZE) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 [N, 3 * size * size] in [0, 1] (the memorisation check's pixel space)."""
    return resize_uint8(images, size).reshape(images.shape[0], -1).float() / 255


def edge_energy(images: torch.Tensor, size: int = PIXEL_SIZE) -> torch.Tensor:
    """Per picture (float64 [N]): the mean absolute difference between neighbouring pixels (right and down) of its
    grey level in [0, 1] at `size` px: how much edge and detail it holds. Blur lowers it; the sharpness summary
    compares its median over samples with the same over real emoji (module docstring)."""
    x = resize_uint8(images, size).double() / 255
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    dx = (y[:, :, 1:] - y[:, :, :-1]).abs().flatten(1).mean(1)
    dy = (y[:, 1:, :] - y[:, :-1, :]).abs().flatten(1).mean(1)
    return (dx + dy) / 2


def sharpness(gen: torch.Tensor, held: torch.Tensor, train: torch.Tensor) -> dict:
    """Median edge_energy of the samples, the held-out and the training emoji, and the samples' ratio to the
    held-out emoji (about 1: as much detail as real emoji; well below 1: blurred)."""
    med = lambda e: float(e.median())  # noqa: E731
    g, h, t = med(gen), med(held), med(train)
    return {"generated": g, "heldout": h, "train": t, "ratio_to_heldout": g / h}


def featurize(classifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """uint8 images -> {"features" [N, D], "group", "subgroup" (predicted, int64 [N]), "confidence" (top group
    probability [N])}, all on the CPU."""
    r = classifier.run(images)
    p = r["group_logits"].softmax(1)
    return {"features": r["features"], "group": p.argmax(1), "confidence": p.max(1).values,
            "subgroup": r["subgroup_logits"].argmax(1)}


def emoji_images(size: int = PIXEL_SIZE, font=None, emoji_test=None) -> dict[str, tuple]:
    """{"train": (uint8 [N, 3, size, size], labels), "heldout": ...}: the default catalog's splits
    (lddgan_core.data.emoji.make_emoji), rendered once per process."""
    from ..data import emoji as E

    def make():
        catalog = E.load_catalog(font, emoji_test)
        return {split: E.make_emoji(split, size, catalog, font) for split in E.SPLITS}

    return _IMAGES.get_or((size, font, emoji_test), make)


def real_sets(classifier=None, size: int = PIXEL_SIZE, font=None, emoji_test=None) -> dict[str, dict]:
    """{"train": ..., "heldout": ...}: each split of the default catalog as featurize() gives it, plus "images"
    (uint8 at `size`), "pixels" (pixel_vectors) and the true "group_true" / "subgroup_true"; cached per process."""
    classifier = classifier or default_classifier()

    def make():
        out = {}
        for split, (images, labels) in emoji_images(size, font, emoji_test).items():
            out[split] = dict(featurize(classifier, images), images=images, pixels=pixel_vectors(images),
                              edges=edge_energy(images),
                              group_true=labels["group"], subgroup_true=labels["subgroup"], index=labels["index"])
        return out

    return _REAL.get_or((classifier, size, font, emoji_test), make)


# -- nearest neighbours and the memorisation check ----------------------------------------------------------------
def nearest(queries: torch.Tensor, refs: torch.Tensor, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of queries [N, D], the Euclidean distance (float64 [N]) to its nearest row of refs [M, D]
    and that row's index (int64 [N]). Candidates come from a float32 matrix product (centred on the refs' mean);
    the CANDIDATES best are measured exactly (the difference itself), so an identical row gives exactly 0."""
    q, r = queries.detach().float().cpu(), refs.detach().float().cpu()
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1] or r.shape[0] == 0:
        raise InputError(f"nearest: expected [N, D] and [M >= 1, D], got {tuple(q.shape)} and {tuple(r.shape)}")
    centre = r.mean(0)
    rc = r - centre
    rn = rc.square().sum(1)
    k = min(CANDIDATES, r.shape[0])
    dist, index = [], []
    for rows in q.split(chunk):
        approx = rn[None] - 2 * (rows - centre) @ rc.T  # |q - r|^2 - |q|^2
        cand = approx.topk(k, dim=1, largest=False).indices  # [c, k]
        exact = (rows[:, None] - r[cand]).double().square().sum(-1)  # [c, k]
        best = exact.argmin(1)
        dist.append(exact.gather(1, best[:, None])[:, 0].sqrt())
        index.append(cand.gather(1, best[:, None])[:, 0])
    if not dist:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(dist), torch.cat(index)


def _summary(d: torch.Tensor) -> dict:
    q = torch.quantile(d, torch.tensor([0.05, 0.25, 0.5], dtype=torch.float64)).tolist() if len(d) else [math.nan] * 3
    return {"n": len(d), "min": float(d.min()) if len(d) else math.nan, "p5": q[0], "p25": q[1], "median": q[2],
            "mean": float(d.mean()) if len(d) else math.nan}


def memorisation_check(samples: dict, train: dict, heldout: dict, percentile: float = COPY_PERCENTILE) -> dict:
    """samples / train / heldout: dicts with "pixels" (pixel_vectors) and optionally "features". Returns
    {"primary": "pixel", space: {"samples": distance summary, "heldout": summary (all held-out emoji),
    "heldout_duplicates", "threshold_p5", "heldout_min", "frac_closer_than_heldout_p5", "frac_copies",
    "n_copies"}, "details": {space: {"sample_distance", "sample_index" (into train), "heldout_distance",
    "heldout_index", "copy"}}} (details: tensors). Pixel distances are RMS over pixels and channels in [0, 1];
    feature distances Euclidean.

    The thresholds come from the held-out emoji that are not pixel duplicates of a training emoji (pixel
    distance <= DUPLICATE_RMS): the font draws a few different sequences with one picture (e.g. "family" and
    "family: man, man, boy" in Noto 2.042), and such a held-out emoji is a copy that nobody made;
    "heldout_duplicates" counts them. A sample is a copy ("copy", frac_copies) when it is nearer to a training
    image than every other held-out emoji is (heldout_min)."""
    out = {"primary": "pixel", "percentile": percentile, "details": {}}
    dup = None
    for space, key in (("pixel", "pixels"), ("features", "features")):
        if key not in samples:
            continue
        scale = 1 / math.sqrt(train[key].shape[1]) if space == "pixel" else 1.0
        ds, is_ = nearest(samples[key], train[key])
        dh, ih = nearest(heldout[key], train[key])
        ds, dh = ds * scale, dh * scale
        if dup is None:  # from the pixel distances (the first space)
            dup = dh <= DUPLICATE_RMS if space == "pixel" else torch.zeros(len(dh), dtype=torch.bool)
        novel = dh[~dup]
        if len(novel) == 0:
            raise InputError("memorisation check: no held-out emoji (that is not a duplicate of a training emoji)")
        threshold = float(torch.quantile(novel, percentile / 100))
        floor = float(novel.min())
        copy = ds < floor
        out[space] = {"samples": _summary(ds), "heldout": _summary(dh), "heldout_duplicates": int(dup.sum()),
                      "threshold_p5": threshold, "heldout_min": floor,
                      "frac_closer_than_heldout_p5": float((ds < threshold).double().mean()),
                      "frac_copies": float(copy.double().mean()), "n_copies": int(copy.sum())}
        out["details"][space] = {"sample_distance": ds, "sample_index": is_, "heldout_distance": dh,
                                 "heldout_index": ih, "copy": copy}
    return out


def closest_pairs_grid(samples: torch.Tensor, details: dict, train_images: torch.Tensor | None = None, k: int = 16,
                       ncol: int = 4, space: str = "pixel", pad: int = 2, gap: int = 8,
                       size: int = PIXEL_SIZE) -> np.ndarray:
    """A picture (uint8 [H, W, 3]) of the k samples closest to a training image, each beside that training image
    (sample left, training image right), closest first, ncol pairs per row on grey. `details` is the result's
    "details" (evaluate_emoji_images(details=True)) or memorisation_check()'s; train_images default to the
    training split at `size`. Size: rows = ceil(k' / ncol), k' = min(k, N);
    H = rows * size + (rows - 1) * gap + 2 * pad, W = ncol * (2 * size + pad) + (ncol - 1) * gap + 2 * pad."""
    samples = resize_uint8(checked_uint8(samples), size)
    d = details["details"] if "details" in details else details
    if space not in d:
        raise InputError(f"closest_pairs_grid: no {space!r} distances in details (have {sorted(d)})")
    dist, index = d[space]["sample_distance"], d[space]["sample_index"]
    if len(dist) != len(samples):
        raise InputError(f"closest_pairs_grid: {len(samples)} samples but {len(dist)} distances")
    train = emoji_images(size)["train"][0] if train_images is None else resize_uint8(train_images, size)
    order = torch.argsort(dist, stable=True)[:k].tolist()
    rows = max(1, math.ceil(len(order) / ncol))
    pair_w = 2 * size + pad
    grid = np.full((rows * size + (rows - 1) * gap + 2 * pad, ncol * pair_w + (ncol - 1) * gap + 2 * pad, 3), 128,
                   dtype=np.uint8)
    for i, j in enumerate(order):
        r, c = divmod(i, ncol)
        y, x = pad + r * (size + gap), pad + c * (pair_w + gap)
        grid[y:y + size, x:x + size] = samples[j].permute(1, 2, 0).numpy()
        grid[y:y + size, x + size + pad:x + pair_w] = train[int(index[j])].permute(1, 2, 0).numpy()
    return grid


# -- feature metrics and group histograms --------------------------------------------------------------------------
def _metrics(fake: torch.Tensor, real: torch.Tensor) -> dict:
    out = {"fid": M.fid(real, fake), "n_fake": len(fake), "n_real": len(real)}
    out.update(M.manifold_metrics(real, fake, k_pr=K_PR, k_dc=K_DC))
    return out


def _groups(gen: dict, data: dict, num_groups: int, num_subgroups: int) -> dict:
    mm = M.mode_metrics(gen["group"], data["group"], num_groups)
    sub = M.mode_metrics(gen["subgroup"], data["subgroup"], num_subgroups)
    return {"n": len(gen["group"]), "kl_gen_data": mm["kl_gen_data"], "kl_data_gen": mm["kl_data_gen"],
            "groups_covered": mm["modes_covered"], "histogram": mm["histogram_gen"],
            "subgroups_covered": sub["modes_covered"], "subgroup_kl_gen_data": sub["kl_gen_data"],
            "mean_confidence": float(gen["confidence"].double().mean())}


def evaluate_emoji_images(images: torch.Tensor, *, classifier=None, device="cpu", font=None, emoji_test=None,
                          details: bool = False, source: str = "(in memory)", log=None) -> dict:
    """Evaluate emoji pictures (uint8 [N, 3, H, W], or float in [-1, 1], N >= 10; any size, compared at 64 px)
    against the emoji data (module docstring). Returns a JSON-ready dict: "vs_heldout" and "vs_train"
    ({"generated": {fid, precision, recall, density, coverage, n_fake, n_real}, "ceiling": {same}}), "groups"
    ({"generated", "ceiling"}: histograms and KL against the training split's, "data_histogram",
    "data_histogram_true", "group_names"), "memorisation" (memorisation_check without its details), "classifier"
    and the set sizes; with details=True also "details" (per-sample tensors, for closest_pairs_grid)."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    images = checked_uint8(images)
    if images.shape[0] < MIN_N:
        raise InputError(f"evaluate_emoji_images: needs at least {MIN_N} images (k-NN metrics with k={K_DC}), got "
                         f"{images.shape[0]}")
    clf = classifier or default_classifier(device)
    real = real_sets(clf, PIXEL_SIZE, font, emoji_test)
    train, held = real["train"], real["heldout"]
    log(f"emoji data featurized ({len(train['group'])} train, {len(held['group'])} held-out) in "
        f"{time.perf_counter() - t0:.1f} s")
    gen = dict(featurize(clf, images), pixels=pixel_vectors(images))
    n = min(len(images), len(held["group"]))
    subset = torch.randperm(len(train["group"]), generator=torch.Generator().manual_seed(CEILING_SUBSET_SEED))[:n]
    result = {"what": "emoji images", "source": source, "n_samples": len(images), "n": n,
              "n_train": len(train["group"]), "n_heldout": len(held["group"]), "image_size": list(images.shape[2:]),
              "pixel_size": PIXEL_SIZE, "feature_dim": gen["features"].shape[1], "k_pr": K_PR, "k_dc": K_DC,
              "vs_heldout": {"generated": _metrics(gen["features"][:n], held["features"]),
                             "ceiling": _metrics(train["features"][subset], held["features"])},
              "vs_train": {"generated": _metrics(gen["features"][:n], train["features"]),
                           "ceiling": _metrics(held["features"][:n], train["features"])}}
    c = clf.config
    info = getattr(clf, "info", {})

    def histogram(labels):
        return M.mode_histogram(labels, c.num_groups)[:c.num_groups].tolist()

    result["groups"] = {"generated": _groups(gen, train, c.num_groups, c.num_subgroups),
                        "ceiling": _groups(held, train, c.num_groups, c.num_subgroups),
                        "data_histogram": histogram(train["group"]),
                        "data_histogram_true": histogram(train["group_true"]),
                        "group_names": info.get("group_names")}
    result["sharpness"] = sharpness(edge_energy(images), held["edges"], train["edges"])
    mem = memorisation_check(gen, train, held)
    result["memorisation"] = {k: v for k, v in mem.items() if k != "details"}
    result["classifier"] = {"path": getattr(clf, "path", None),
                            "heldout_group_accuracy": info.get("heldout_group_accuracy"),
                            "accuracy_on_heldout": float((held["group"] == held["group_true"]).double().mean())}
    if details:
        result["details"] = mem["details"]
    result["seconds"] = time.perf_counter() - t0
    return result


def _as_model(model):
    """An LDDGAN as is; a model path or a shipped name, loaded."""
    from ..hub.shipped import resolve_model_path
    from ..model import LDDGAN, load_model

    return model if isinstance(model, LDDGAN) else load_model(resolve_model_path(model))


def sample_images(model, n: int, seed: int = 0, batch: int = 64) -> torch.Tensor:
    """n samples of `model` (an LDDGAN or a model path / shipped name), seeds seed..seed+n-1, as uint8
    [n, 3, H, W]."""
    for name, v in (("n", n), ("seed", seed), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
            raise InputError(f"{name}: expected an integer >= {0 if name == 'seed' else 1}, got {v!r}")
    model = _as_model(model)
    parts = []
    for start in range(0, n, batch):
        seeds = list(range(seed + start, seed + min(start + batch, n)))
        parts.append(checked_uint8(model.decode(model.sample(seeds=seeds)).clamp(-1, 1)))
    return torch.cat(parts)


def evaluate_emoji_model(model, n: int = 1000, seed: int = 0, batch: int = 64, details: bool = False,
                         log=None) -> tuple[dict, torch.Tensor]:
    """Sample n pictures of `model` (seeds seed..) and evaluate_emoji_images them; returns (result, samples).
    The result's "sharpness" also holds the edge energy of the held-out emoji passed through the model's own
    autoencoder ("autoencoder_heldout"): what the autoencoder lets through, against what the generator draws."""
    source = str(getattr(model, "config", None) and model.config.name or model)
    model = _as_model(model)
    t0 = time.perf_counter()
    images = sample_images(model, n, seed, batch)
    t_sample = time.perf_counter() - t0
    r = evaluate_emoji_images(images, details=details, source=source, log=log)
    r["sampling"] = {"n": n, "seed": seed, "seconds": t_sample}
    held = real_sets()["heldout"]
    rec = edge_energy(reconstruct(model, resize_uint8(held["images"], images.shape[-1]), batch))
    r["sharpness"]["autoencoder_heldout"] = float(rec.median())
    r["sharpness"]["autoencoder_ratio_to_heldout"] = float(rec.median()) / r["sharpness"]["heldout"]
    return r, images


def reconstruct(model, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """uint8 pictures through `model`'s autoencoder (encode, decode) -> uint8: the sharpest a generator in its
    latent space can draw them."""
    parts = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch].float() / 127.5 - 1
        parts.append(checked_uint8(model.decode(model.encode(x)).clamp(-1, 1)))
    return torch.cat(parts)


def emoji_group_sets(group: str, n_images: int, classifier=None) -> dict[str, dict]:
    """One Unicode group's emoji split for a few-image fine-tune: "finetune" = its first n_images training emoji
    (catalog order; what ``recipes finetune-emoji`` trains on), "unseen" = the rest of its training emoji plus its
    held-out ones (the group's emoji the fine-tune never sees). Each as real_sets() gives a split (images, features,
    pixels, edges, ...); plus "group_index"."""
    from ..data import emoji as E

    names = E.group_names()
    if group not in names:
        raise InputError(f"group: expected one of {list(names)}, got {group!r}")
    g = names.index(group)
    real = real_sets(classifier)
    train, held = real["train"], real["heldout"]
    members = torch.nonzero(train["group_true"] == g).flatten()
    if len(members) < 2 * MIN_N:
        raise InputError(f"group: {group!r} has {len(members)} training emoji; a fine-tune check needs at least "
                         f"{2 * MIN_N} ({MIN_N} to train on, {MIN_N} unseen)")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or not MIN_N <= n_images <= len(members) - MIN_N:
        raise InputError(f"images: expected an integer {MIN_N}..{len(members) - MIN_N} for {group!r} "
                         f"({len(members)} training emoji; at least {MIN_N} must stay unseen), got {n_images!r}")
    held_members = torch.nonzero(held["group_true"] == g).flatten()

    def pick(parts):
        return {k: torch.cat([split[k][idx] for split, idx in parts]) for k in train
                if isinstance(train[k], torch.Tensor)}

    return {"finetune": pick([(train, members[:n_images])]),
            "unseen": pick([(train, members[n_images:]), (held, held_members)]), "group_index": g}


def evaluate_emoji_group(images: torch.Tensor, group: str, n_images: int, *, classifier=None) -> dict:
    """Pictures of a model fine-tuned on the first n_images training emoji of one group (emoji_group_sets):
    "in_group" = share the classifier puts in the group with confidence >= 0.5; feature metrics against the
    group's unseen emoji: "generated" (all samples), "generated_same_n" (the first n_images samples) and
    "ceiling" (the n_images fine-tune pictures themselves: what a model that drew exactly its training pictures
    would get; k-NN recall and coverage grow with n, so compare it with generated_same_n); "memorisation": memorisation_check with
    the fine-tune images as the training set and the unseen emoji as the baseline (frac_copies: samples nearer
    to a fine-tune image than any unseen emoji of the group is); "sharpness": median edge energy, samples /
    unseen emoji."""
    images = checked_uint8(images)
    if images.shape[0] < MIN_N:
        raise InputError(f"evaluate_emoji_group: needs at least {MIN_N} images, got {images.shape[0]}")
    clf = classifier or default_classifier()
    sets = emoji_group_sets(group, n_images, clf)
    ft, unseen = sets["finetune"], sets["unseen"]
    images = resize_uint8(images)
    gen = dict(featurize(clf, images), pixels=pixel_vectors(images))
    ok = (gen["group"] == sets["group_index"]) & (gen["confidence"] >= 0.5)
    mem = memorisation_check(gen, ft, unseen)
    edges = float(edge_energy(images).median())
    return {"group": group, "n_samples": len(images), "n_finetune": len(ft["group"]), "n_unseen": len(unseen["group"]),
            "in_group": float(ok.double().mean()),
            "vs_unseen": {"generated": _metrics(gen["features"], unseen["features"]),
                          "generated_same_n": _metrics(gen["features"][:len(ft["group"])], unseen["features"]),
                          "ceiling": _metrics(ft["features"], unseen["features"])},
            "memorisation": {k: v for k, v in mem.items() if k != "details"},
            "sharpness": {"samples": edges, "unseen": float(unseen["edges"].median()),
                          "ratio_to_unseen": edges / max(float(unseen["edges"].median()), 1e-12)}}


def format_report(r: dict) -> str:
    """The readable summary the CLI prints."""
    lines = [f"{r['what']} {r['source']}: {r['n_samples']} images; feature metrics at n={r['n']} "
             f"(held-out {r['n_heldout']}, train {r['n_train']} emoji)",
             f"{'metric':<10} | {'vs held-out':>11} | {'ceiling':>8} | {'vs train':>9} | {'ceiling':>8}"]
    for k in ("fid", "precision", "recall", "density", "coverage"):
        v = [r[ref][side][k] for ref in ("vs_heldout", "vs_train") for side in ("generated", "ceiling")]
        lines.append(f"{k:<10} | {v[0]:>11.3f} | {v[1]:>8.3f} | {v[2]:>9.3f} | {v[3]:>8.3f}")
    sh = r.get("sharpness")
    if sh:
        ae = (f"; the model's autoencoder on held-out emoji {sh['autoencoder_heldout']:.4f} "
              f"({sh['autoencoder_ratio_to_heldout']:.2f})" if "autoencoder_heldout" in sh else "")
        lines.append(f"edge energy (median): samples {sh['generated']:.4f}, held-out {sh['heldout']:.4f}, ratio "
                     f"{sh['ratio_to_heldout']:.2f}{ae}")
    g, gc = r["groups"]["generated"], r["groups"]["ceiling"]
    lines.append(f"groups: KL(gen||data) {g['kl_gen_data']:.4f} (held-out {gc['kl_gen_data']:.4f}), "
                 f"{g['groups_covered']} groups / {g['subgroups_covered']} subgroups predicted")
    for space in SPACES:
        m = r["memorisation"].get(space)
        if m:
            lines.append(f"nearest training image ({space}{', primary' if space == 'pixel' else ''}): median "
                         f"{m['samples']['median']:.4f} (held-out {m['heldout']['median']:.4f}), p5 "
                         f"{m['samples']['p5']:.4f} (held-out {m['heldout']['p5']:.4f}); closer than held-out p5: "
                         f"{m['frac_closer_than_heldout_p5']:.3f}; closer than any held-out: {m['n_copies']} "
                         f"({m['frac_copies']:.3f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..data.images import save_png
    from .evaluate import load_image_folder

    p = argparse.ArgumentParser(prog="python -m lddgan_core.eval.emoji_eval",
                                description="evaluate emoji pictures against the emoji data")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="a folder of images (png / jpg / webp, one size)")
    src.add_argument("--heldout", action="store_true", help="the held-out split itself: the baseline")
    src.add_argument("--model", help="a model file or a shipped name (emoji): evaluate n samples (seeds 0..n-1)")
    p.add_argument("--n", type=int, help="use the first n images of --folder; samples of --model (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="--model: sample i uses seed + i")
    p.add_argument("--grid", help="write the 16 closest sample / training pairs to this PNG")
    p.add_argument("--json", help="write the result to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if a.model:
            r, images = evaluate_emoji_model(a.model, a.n or 1000, a.seed, details=bool(a.grid))
        else:
            if a.heldout:
                images, source = real_sets()["heldout"]["images"], "held-out split"
            else:
                images, source = load_image_folder(a.folder, a.n), a.folder
            r = evaluate_emoji_images(images, details=bool(a.grid), source=source)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(r))
    if a.grid:
        save_png(closest_pairs_grid(images, r.pop("details")), a.grid)
        print(f"wrote {a.grid}")
    if a.json:
        from ..atomic import atomic_write_text

        atomic_write_text(a.json, json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
