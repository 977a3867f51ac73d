"""The shapes mode classifier: the shipped weights' accuracy and robustness, the API, deterministic training
and strict loading."""
import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save_file

from lddgan_core.errors import CheckpointError, InputError
from lddgan_core.eval.classifier import (DEFAULT_PATH, ClassifierConfig, ClassifierTrainConfig, _blur,
                                         learning_rate, load_classifier, outlier_images, save_classifier,
                                         train_classifier)
from lddgan_core.formats.safe_load import read_safetensors
from lddgan_core.data.shapes import make_shapes, to_model_range


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


@pytest.fixture(scope="module")
def heldout():
    """400 images of the evaluation data (shapes seed 1), which the classifier never saw."""
    return make_shapes(400, seed=1)


def test_shipped_classifier_metadata_and_accuracy(clf, heldout):
    assert clf.path == DEFAULT_PATH and clf.config == ClassifierConfig()
    # the default training command reproduces the shipped weights: its recorded config is the default one
    assert clf.info["train"] == json.loads(json.dumps(asdict(ClassifierTrainConfig())))
    assert clf.info["train"]["data_seed"] not in (0, 1, 2) and clf.info["heldout_seed"] not in (0, 1, 2, 3)
    assert clf.info["heldout_accuracy"] > 0.98 and clf.info["heldout_images"] >= 5000
    images, labels = heldout
    assert (clf.predict(images) == labels["mode"]).double().mean() > 0.98


def test_api_shapes_dtypes_and_sizes(clf, heldout):
    images = heldout[0][:24]
    f = clf.features(images)
    assert f.shape == (24, 128) and f.dtype == torch.float32
    assert torch.allclose(f, clf.features(to_model_range(images)), atol=1e-5)  # uint8 and [-1, 1] floats agree
    p = clf.predict(images)
    assert p.dtype == torch.int64 and p.shape == (24,)
    assert torch.equal(clf.features(images, batch=5), f)  # does not depend on the batch size
    big, labels = make_shapes(24, seed=1, size=64)  # other sizes are resized to 32
    assert torch.equal(clf.predict(big), labels["mode"])
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        clf.features(torch.zeros(2, 1, 32, 32))


def test_robust_to_blur_and_noise(clf, heldout):
    x, y = to_model_range(heldout[0]), heldout[1]["mode"]
    blurred = _blur(x, torch.full((len(x),), 1.5))
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    for z in (blurred, noisy):
        assert (clf.predict(z) == y).double().mean() > 0.97


def test_confidence_is_low_without_a_shape(clf, heldout):
    real = clf.run(heldout[0][:64])[1].softmax(1).max(1).values.mean()
    junk = outlier_images(to_model_range(heldout[0][:64]), 64, torch.Generator().manual_seed(1))
    conf = clf.run(junk)[1].softmax(1).max(1).values.mean()
    assert real > 0.98 and conf < 0.5


def test_learning_rate_schedule_ends():
    cfg = ClassifierTrainConfig(lr=1e-3, warmup=10, steps=110)
    assert learning_rate(0, cfg) == pytest.approx(1e-4) and learning_rate(9, cfg) == pytest.approx(1e-3)
    assert learning_rate(10, cfg) == pytest.approx(1e-3) and learning_rate(60, cfg) == pytest.approx(5e-4, rel=1e-6)
    assert 0 < learning_rate(109, cfg) < 1e-6  # the last step, just before 0


TINY_ARCH = ClassifierConfig(channels=(8, 16), convs=(1, 1), groups=4)
TINY_TRAIN = ClassifierTrainConfig(train_images=48, steps=3, check_images=16, warmup=1, batch_size=16, outliers=4)


def test_training_is_deterministic_and_the_file_round_trips(tmp_path):
    m1, info1 = train_classifier(TINY_TRAIN, TINY_ARCH)
    m2, info2 = train_classifier(TINY_TRAIN, TINY_ARCH)
    assert info1 == info2 and 0 <= info1["heldout_accuracy"] <= 1
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    p1 = save_classifier(m1, str(tmp_path / "a.safetensors"), info1)
    p2 = save_classifier(m2, str(tmp_path / "b.safetensors"), info2)
    (t1, meta1), (t2, meta2) = read_safetensors(p1), read_safetensors(p2)
    assert meta1 == meta2 and t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    loaded = load_classifier(p1)
    assert loaded.config == TINY_ARCH and loaded.info == info1 and not loaded.training
    assert list(loaded.state_dict()) == list(m1.state_dict())
    assert "stages.32x32.convs.conv0.weight" in loaded.state_dict()  # keys name the resolution
    x = make_shapes(4, seed=1)[0]
    assert torch.equal(loaded.features(x), m1.features(x))


def _rewrite(tmp_path, change_tensors=None, change_meta=None):
    tensors, meta = read_safetensors(DEFAULT_PATH)
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    p = str(tmp_path / "c.safetensors")
    save_file(tensors, p, metadata=meta)
    return p


def test_strict_loading_names_the_mismatch(tmp_path):
    def extra(t):
        t["extra.weight"] = torch.zeros(1)

    with pytest.raises(CheckpointError, match=r"unexpected \['extra.weight'\]"):
        load_classifier(_rewrite(tmp_path, extra))
    with pytest.raises(CheckpointError, match=r"missing \['head.bias'\]"):
        load_classifier(_rewrite(tmp_path, lambda t: t.pop("head.bias")))

    def reshape(t):
        t["head.weight"] = torch.zeros(10, 128)

    with pytest.raises(CheckpointError, match=r"head.weight: file \(10, 128\) vs config \(16, 128\)"):
        load_classifier(_rewrite(tmp_path, reshape))

    def unknown(m):
        m["config"] = json.dumps({**json.loads(m["config"]), "dropout": 0.1})

    with pytest.raises(CheckpointError, match=r"unknown fields \['dropout'\]"):
        load_classifier(_rewrite(tmp_path, change_meta=unknown))


def test_foreign_and_missing_files(tmp_path):
    from lddgan_core.tools.cli import DEFAULT_MODEL

    with pytest.raises(CheckpointError, match="not a lddgan-shapes-classifier file"):
        load_classifier(DEFAULT_MODEL)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier(str(tmp_path / "none.safetensors"))
