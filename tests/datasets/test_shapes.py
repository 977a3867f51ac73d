"""The procedural shapes data: deterministic, index-stable, balanced modes, shapes where the labels say."""
import hashlib
import math

import pytest
import torch

from lddgan_core.errors import InputError
from lddgan_core.data.shapes import (COLOURS, HUES, NUM_MODES, SHAPES, make_shapes, mode_name, save_folder,
                                     to_model_range)


def test_deterministic_and_index_stable():
    a, la = make_shapes(40, seed=5)
    b, lb = make_shapes(40, seed=5)
    assert torch.equal(a, b) and all(torch.equal(la[k], lb[k]) for k in la)
    c, lc = make_shapes(10, seed=5, start=25)  # image i depends only on (seed, i)
    assert torch.equal(c, a[25:35]) and torch.equal(lc["mode"], la["mode"][25:35])
    d, _ = make_shapes(40, seed=6)
    assert not torch.equal(a, d)
    # chunking does not change the result
    e, _ = make_shapes(40, seed=5, chunk=7)
    assert torch.equal(a, e)


def test_pinned_bytes():
    # a change to the renderer changes every dataset (and the shipped model's training data): pin it
    x, lab = make_shapes(8, seed=0)
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32)
    assert lab["mode"].tolist() == [12, 5, 8, 10, 10, 3, 10, 15]
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16] == "594f8164bda39287"


def test_modes_balanced():
    _, lab = make_shapes(3200, seed=1)
    counts = torch.bincount(lab["mode"], minlength=NUM_MODES).float()
    assert counts.min() > 0.7 * 200 and counts.max() < 1.3 * 200
    assert torch.equal(lab["mode"], lab["shape"] * len(COLOURS) + lab["colour"])


def test_shape_pixels_have_the_labelled_colour():
    x, lab = make_shapes(64, seed=2)
    for i in range(64):
        cx, cy = float(lab["cx"][i]) * 32, float(lab["cy"][i]) * 32
        p = x[i, :, int(cy), int(cx)].float() / 255  # the centre pixel is inside every shape
        mx, mn = p.max(), p.min()
        assert mx - mn > 0.3, f"image {i}: centre pixel {p.tolist()} is not saturated"
        r, g, b = p.tolist()
        d = mx - mn
        h = (60 * ((g - b) / d % 6) if mx == r else 60 * ((b - r) / d + 2) if mx == g else 60 * ((r - g) / d + 4))
        want = HUES[int(lab["colour"][i])]
        dist = min(abs(h - want), 360 - abs(h - want))
        assert dist < 20, f"image {i}: hue {h:.0f}, expected {COLOURS[int(lab['colour'][i])]} ({want})"


def test_shape_areas_match_geometry():
    # anti-aliased coverage sums to the analytic area of each shape (fractions of r^2)
    from lddgan_core.data.shapes import _masks, _params

    p = _params(200, 3, 0)
    area = _masks(p, 32).sum(dim=(1, 2)) / (32 * p["radius"]) ** 2
    want = {"circle": math.pi, "square": 1.6 ** 2, "triangle": 3 * math.sqrt(3) / 4,
            "cross": 2 * (2 * 0.32 * 2) - (2 * 0.32) ** 2}
    for s, name in enumerate(SHAPES):
        got = area[p["shape"] == s]
        assert len(got) > 20
        assert abs(float(got.mean()) / want[name] - 1) < 0.03, (name, float(got.mean()), want[name])


def test_errors_and_helpers(tmp_path):
    with pytest.raises(InputError, match="n must be an integer"):
        make_shapes(-1)
    with pytest.raises(InputError, match="size"):
        make_shapes(2, size=4)
    x, lab = make_shapes(0)
    assert x.shape == (0, 3, 32, 32)
    assert mode_name(0) == "red circle" and mode_name(NUM_MODES - 1) == "blue cross"
    y = to_model_range(make_shapes(2)[0])
    assert y.min() >= -1 and y.max() <= 1 and y.dtype == torch.float32
    save_folder(str(tmp_path), 6, seed=0)
    pngs = sorted(tmp_path.rglob("*.png"))
    assert len(pngs) == 6
    from lddgan_core.data.images import load_image

    img = load_image(str(pngs[0]), 32)
    assert img.shape == (1, 3, 32, 32)
