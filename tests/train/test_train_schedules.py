"""Weighted Learning and learning-rate schedules: the formulas at both ends, in the middle, and against the
official expression 1 - 1/(1 + exp(-linspace(-gamma, gamma, N+1)))[epoch]."""
import math

import numpy as np
import pytest

import lddgan_core as L
from lddgan_core.errors import ConfigError
from lddgan_core.train import lr_at, progress_of, rec_weight


@pytest.mark.parametrize("gamma,N", [(6.0, 10), (6.0, 2000), (3.0, 7)])
def test_sigmoid_matches_official_expression(gamma, N):
    official = 1 - 1 / (1 + np.exp(-np.linspace(-gamma, gamma, N + 1)))
    ours = np.array([rec_weight(e / N, "sigmoid", gamma) for e in range(N + 1)])
    np.testing.assert_allclose(ours, official, rtol=1e-12, atol=1e-15)


def test_sigmoid_ends_and_middle():
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert rec_weight(0.0) == pytest.approx(s(6.0), abs=1e-15) == pytest.approx(0.9975273768, abs=1e-10)
    assert rec_weight(1.0) == pytest.approx(s(-6.0), abs=1e-15) == pytest.approx(0.0024726232, abs=1e-10)
    assert rec_weight(0.5) == 0.5
    assert rec_weight(0.25, gamma=2.0) == pytest.approx(1 - s(-1.0), abs=1e-15)
    ws = [rec_weight(p / 100) for p in range(101)]
    assert all(a > b for a, b in zip(ws, ws[1:]))  # strictly decreasing
    assert rec_weight(1.0, gamma=800.0) == 0.0 and rec_weight(0.0, gamma=800.0) == 1.0  # no overflow


def test_other_schedules():
    assert [rec_weight(p, "constant", value=0.3) for p in (0, 0.5, 1)] == [0.3, 0.3, 0.3]
    assert [rec_weight(p, "off") for p in (0, 0.5, 1)] == [0.0, 0.0, 0.0]
    assert [rec_weight(p, "linear", value=2.0) for p in (0, 0.25, 1)] == [2.0, 1.5, 0.0]
    assert rec_weight(0.0, "cosine") == 1.0 and rec_weight(1.0, "cosine") == pytest.approx(0.0, abs=1e-16)
    assert rec_weight(0.5, "cosine") == pytest.approx(0.5, abs=1e-15)
    assert rec_weight(1 / 3, "cosine") == pytest.approx(0.75, abs=1e-15)


def test_exported_at_top_level():
    assert L.rec_weight is rec_weight
    assert "rec_weight" in L.__all__


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_progress_out_of_range(bad):
    with pytest.raises(ConfigError, match="progress"):
        rec_weight(bad)


def test_bad_schedule_and_gamma():
    with pytest.raises(ConfigError, match="schedule must be one of"):
        rec_weight(0.5, "exp")
    with pytest.raises(ConfigError, match="gamma"):
        rec_weight(0.5, "sigmoid", gamma=0)


def test_lr_schedules():
    assert lr_at(0.7, 2e-4) == 2e-4
    assert lr_at(0.0, 2e-4, "cosine") == pytest.approx(2e-4, rel=1e-15)
    assert lr_at(1.0, 2e-4, "cosine") == pytest.approx(1e-5, rel=1e-12)  # official eta_min
    assert lr_at(0.5, 2e-4, "cosine") == pytest.approx(1e-5 + 0.5 * (2e-4 - 1e-5), rel=1e-12)
    assert lr_at(1.0, 5e-6, "cosine") == pytest.approx(5e-6)  # floor capped at the base lr
    with pytest.raises(ConfigError):
        lr_at(0.5, 1e-4, "step")


def test_progress_of():
    assert [progress_of(s, 5) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert progress_of(0, 1) == 0.0 and progress_of(9, 5) == 1.0
