"""Tests for lddgan_core.eval.inception: the FID Inception-v3 loaded from a local file, strictly.

Random weights stand in for pytorch-fid's pt_inception-2015-12-05-6726825d.pth (not shipped, never downloaded).
data/fid_inception_keys.json was recorded once (outside CI) from pytorch-fid 0.3.0's own fid_inception_v3(): its
state-dict keys and shapes, and golden features of its InceptionV3 for random_state_dict(0) below (so the test
catches a wrong pooling kind, count_include_pad or BatchNorm eps, which a self-comparison cannot).
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lddgan_core.errors import CheckpointError, InputError
from lddgan_core.eval.inception import FID_WEIGHTS_NAME, FIDInceptionV3, load_inception
from conftest import TESTS

DATA = TESTS / "data"


def random_state_dict(seed: int = 0) -> dict:
    """Well-scaled random weights (He-normal convs, BatchNorm statistics away from the identity)."""
    g = torch.Generator().manual_seed(seed)
    sd = FIDInceptionV3().state_dict()
    for k, v in sd.items():
        if k.endswith("conv.weight"):
            v.copy_(torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel()))
        elif k.endswith(("bn.weight", "bn.running_var")):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith(("bn.bias", "bn.running_mean")):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.startswith("fc."):
            v.copy_(torch.randn(v.shape, generator=g) * 0.01)
    return sd


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The random state dict, saved as .pth and .safetensors, and reference features of two 32x32 images."""
    d = tmp_path_factory.mktemp("fid_inception")
    sd = random_state_dict()
    torch.save(sd, d / "w.pth")
    save_file(sd, str(d / "w.safetensors"))
    net = FIDInceptionV3()
    net.load_state_dict(sd)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref = net.eval()(x)
    return {"dir": d, "sd": sd, "x": x, "ref": ref}


def _save_variant(saved, name, sd):
    path = saved["dir"] / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_keys_and_shapes_match_pytorch_fid_record():
    recorded = json.loads((DATA / "fid_inception_keys.json").read_text())["keys"]
    ours = {k: list(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    assert ours == recorded
    assert list(ours) == list(recorded)  # same module order too
    assert recorded["fc.weight"] == [1008, 2048]


def test_features_match_pytorch_fid_golden(saved):
    """Our features for the same random weights and input equal pytorch-fid's (resize/scale order: ~1e-5)."""
    golden = json.loads((DATA / "fid_inception_keys.json").read_text())["golden_features"]
    ref = saved["ref"].double()
    torch.testing.assert_close(ref[:, ::128], torch.tensor(golden["columns"], dtype=torch.float64),
                               rtol=0, atol=1e-4)
    torch.testing.assert_close(ref.sum(1), torch.tensor(golden["row_sums"], dtype=torch.float64),
                               rtol=1e-5, atol=0)


@pytest.mark.parametrize("fname", ["w.pth", "w.safetensors"])
def test_load_pth_and_safetensors_give_reference_features(saved, fname):
    net = load_inception(saved["dir"] / fname)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        f = net(saved["x"])
    assert f.shape == (2, 2048) and f.dtype == torch.float32
    assert f.abs().max() > 0.1  # the random weights give non-trivial features
    torch.testing.assert_close(f, saved["ref"], rtol=0, atol=1e-6)


def test_deterministic_and_batch_independent(saved):
    net = load_inception(saved["dir"] / "w.safetensors")
    with torch.no_grad():
        again = net(saved["x"])
        alone = net(saved["x"][1:])
    assert torch.equal(again, saved["ref"])
    torch.testing.assert_close(alone[0], saved["ref"][1], rtol=1e-5, atol=1e-5)


def test_resize_is_bilinear_to_299(saved):
    """A 32x32 input is resized to 299x299 (bilinear, align_corners=False) before the network."""
    net = load_inception(saved["dir"] / "w.safetensors")
    x = saved["x"][:1]
    up = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        f_up = net(up)
    torch.testing.assert_close(f_up, saved["ref"][:1], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        net(x[:, :1])


def test_torchvision_layout_with_aux_logits_and_no_bn_counters(saved):
    """torchvision's inception_v3(num_classes=1008, aux_logits=True) names: AuxLogits.* is ignored; BatchNorm
    num_batches_tracked counters may be absent."""
    sd = {k: v for k, v in saved["sd"].items() if not k.endswith("num_batches_tracked")}
    sd["AuxLogits.conv0.conv.weight"] = torch.zeros(128, 768, 1, 1)
    sd["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    net = load_inception(_save_variant(saved, "tv.safetensors", sd))
    for k, v in net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, saved["sd"][k]), k


def test_missing_key(saved):
    sd = dict(saved["sd"])
    del sd["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    path = _save_variant(saved, "missing.safetensors", sd)
    with pytest.raises(CheckpointError) as e:
        load_inception(path)
    msg = str(e.value)
    assert "missing keys: Mixed_6c.branch7x7dbl_3.bn.running_var" in msg
    assert str(path) in msg and "pytorch-fid" in msg and FID_WEIGHTS_NAME in msg


def test_unexpected_key(saved):
    sd = dict(saved["sd"])
    sd["Mixed_8a.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys: Mixed_8a\.conv\.weight"):
        load_inception(_save_variant(saved, "extra.safetensors", sd))


def test_wrong_shape(saved):
    sd = dict(saved["sd"])
    sd["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(192, 2048, 3, 3)
    with pytest.raises(CheckpointError, match=r"shape mismatches: Mixed_7c\.branch_pool\.conv\.weight "
                                              r"\[192, 2048, 3, 3\] \(expected \[192, 2048, 1, 1\]\)"):
        load_inception(_save_variant(saved, "shape.safetensors", sd))


def test_imagenet_classifier_is_rejected_with_a_hint(saved):
    sd = dict(saved["sd"])
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    with pytest.raises(CheckpointError, match="torchvision's ImageNet inception_v3 weights"):
        load_inception(_save_variant(saved, "imagenet.safetensors", sd))


def test_missing_file_says_nothing_is_downloaded(tmp_path):
    path = tmp_path / FID_WEIGHTS_NAME
    with pytest.raises(CheckpointError) as e:
        load_inception(path)
    msg = str(e.value)
    assert str(path) in msg and "does not exist" in msg and "Nothing is downloaded" in msg
    assert "github.com/mseitzer/pytorch-fid/releases" in msg
    assert not path.exists()


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_inception(path)
