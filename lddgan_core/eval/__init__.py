"""Offline sample-quality evaluation (``lddgan eval``): metrics on feature sets, the shapes mode classifier,
and the model / image-folder evaluation against held-out procedural shapes data; for the emoji data, the emoji
group/subgroup classifier and evaluate_emoji_images (feature metrics with ceilings, memorisation check).

    from lddgan_core.eval import evaluate_model, evaluate_images, load_classifier
    from lddgan_core.eval.metrics import fid, precision_recall, density_coverage, mode_metrics

Names are imported lazily, so ``python -m lddgan_core.eval.classifier`` runs its module only once.
"""
import importlib

_EXPORTS = {
    "evaluate_model": "evaluate", "evaluate_images": "evaluate", "format_table": "evaluate",
    "load_image_folder": "evaluate", "METRIC_KEYS": "evaluate",
    "load_classifier": "classifier", "ShapesClassifier": "classifier", "ClassifierConfig": "classifier",
    "fid": "metrics", "precision_recall": "metrics", "density_coverage": "metrics", "manifold_metrics": "metrics",
    "mode_metrics": "metrics",
    "load_emoji_classifier": "emoji_classifier", "EmojiClassifier": "emoji_classifier",
    "EmojiClassifierConfig": "emoji_classifier", "evaluate_emoji_images": "emoji_eval",
    "closest_pairs_grid": "emoji_eval",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
