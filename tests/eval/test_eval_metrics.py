"""lddgan_core.eval.metrics: FID against closed forms, precision/recall/density/coverage against a naive loop
implementation, and mode-histogram metrics on hand-made histograms."""
import math

import pytest
import torch

from lddgan_core.errors import InputError
from lddgan_core.eval import metrics as M


def _sqrtm_denman_beavers(a: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """A general (non-symmetric) matrix square root by the Denman-Beavers iteration, float64: the reference
    for tr((S1 S2)^(1/2)) that does not use the eigen-decomposition trick under test."""
    y, z = a.clone(), torch.eye(a.shape[0], dtype=a.dtype)
    for _ in range(iters):
        y, z = (y + torch.linalg.inv(z)) / 2, (z + torch.linalg.inv(y)) / 2
    return y


def _random_spd(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# -- FID ---------------------------------------------------------------------------------------------------
def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_stats_match_torch_cov():
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 6) + 3
    mu, sigma = M.gaussian_stats(x)
    assert mu.dtype == sigma.dtype == torch.float64
    assert torch.allclose(mu, x.double().mean(0)) and torch.allclose(sigma, torch.cov(x.double().T))


def test_frechet_distance_1d_golden_value():
    # (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2): (1 - 4)^2 + 4 + 9 - 2 * 6 = 10
    d = M.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([4.0]), torch.tensor([[9.0]]))
    assert d == pytest.approx(10.0, abs=1e-12)


def test_frechet_distance_full_covariance_vs_brute_force_sqrtm():
    g = torch.Generator().manual_seed(2)
    for d in (2, 6, 12):
        s1, s2 = _random_spd(d, g), _random_spd(d, g)
        mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
        ref = ((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * _sqrtm_denman_beavers(s1 @ s2).trace())
        assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(ref), rel=1e-9, abs=1e-9)
        # symmetric in its arguments
        assert M.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(float(ref), rel=1e-9, abs=1e-9)


def test_frechet_distance_singular_covariance():
    # rank-2 S1 = A A^T: the non-zero eigenvalues of S1 S2 are those of the 2x2 SPD A^T S2 A, so
    # tr((S1 S2)^(1/2)) = tr((A^T S2 A)^(1/2)), an independent reference (the sqrt of the rounding-level
    # eigenvalues of the singular product adds ~1e-8)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 2, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T, _random_spd(6, g)
    mu = torch.zeros(6, dtype=torch.float64)
    ref = s1.trace() + s2.trace() - 2 * _sqrtm_denman_beavers(a.T @ s2 @ a).trace()
    assert M.frechet_distance(mu, s1, mu, s2) == pytest.approx(float(ref), rel=1e-7)
    assert M.frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_sampled_diagonal_gaussians_vs_closed_form():
    g = torch.Generator().manual_seed(4)
    m1, m2 = torch.tensor([0.0, 1.0, -1.0, 0.5]), torch.tensor([0.5, 0.0, -1.0, 2.0])
    s1, s2 = torch.tensor([1.0, 0.5, 2.0, 1.0]), torch.tensor([0.25, 1.5, 2.0, 3.0])  # variances
    n = 100_000
    a = m1 + s1.sqrt() * torch.randn(n, 4, generator=g, dtype=torch.float64)
    b = m2 + s2.sqrt() * torch.randn(n, 4, generator=g, dtype=torch.float64)
    closed = float((m1 - m2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())  # 3.7500 + 0.6591
    assert M.fid(a, b) == pytest.approx(closed, rel=0.02)


def test_fid_bad_input():
    with pytest.raises(InputError, match="feature sizes differ"):
        M.fid(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(InputError, match="at least 2 rows"):
        M.fid(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(InputError, match=r"\[N, D\]"):
        M.fid(torch.randn(10), torch.randn(10, 3))
    with pytest.raises(InputError, match="NaN"):
        M.fid(torch.full((5, 2), float("nan")), torch.randn(5, 2))


# -- precision / recall / density / coverage ----------------------------------------------------------------
def _naive(real, fake, k_pr, k_dc):
    """Loops over pairs, straight from the papers' definitions."""
    real, fake = real.double().tolist(), fake.double().tolist()

    def dist(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))

    def radius(points, i, k):
        return sorted(dist(points[i], p) for j, p in enumerate(points) if j != i)[k - 1]

    rr_pr = [radius(real, i, k_pr) for i in range(len(real))]
    rr_dc = [radius(real, i, k_dc) for i in range(len(real))]
    rf = [radius(fake, j, k_pr) for j in range(len(fake))]
    precision = sum(any(dist(y, x) <= r for x, r in zip(real, rr_pr)) for y in fake) / len(fake)
    recall = sum(any(dist(x, y) <= r for y, r in zip(fake, rf)) for x in real) / len(real)
    density = sum(sum(dist(y, x) <= r for x, r in zip(real, rr_dc)) for y in fake) / (k_dc * len(fake))
    coverage = sum(any(dist(y, x) <= r for y in fake) for x, r in zip(real, rr_dc)) / len(real)
    return dict(precision=precision, recall=recall, density=density, coverage=coverage)


@pytest.mark.parametrize("block", [M.DISTANCE_BLOCK_BYTES, 8 * 60 * 7])  # one block; 7-row blocks
def test_manifold_metrics_match_naive_loops(monkeypatch, block):
    monkeypatch.setattr(M, "DISTANCE_BLOCK_BYTES", block)
    g = torch.Generator().manual_seed(5)
    real = torch.randn(60, 5, generator=g)
    fake = torch.randn(45, 5, generator=g) * 1.3 + 0.4
    got = M.manifold_metrics(real, fake, k_pr=3, k_dc=5)
    want = _naive(real, fake, 3, 5)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1 and 0 < got["coverage"] < 1
    assert M.precision_recall(real, fake, k=3) == pytest.approx((want["precision"], want["recall"]))
    assert M.density_coverage(real, fake, k=5) == pytest.approx((want["density"], want["coverage"]))
    assert M.precision_recall(real, fake, k=4) == pytest.approx(tuple(_naive(real, fake, 4, 5)[k] for k in
                                                                     ("precision", "recall")))


def test_knn_radii_golden():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    # neighbours of 0: 1, 3, 7; of 1: 0 (1), 3 (2), 7 (6); of 3: 1, 3 (4); of 7: 4, 6, 7
    assert M.knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert M.knn_radii(x, (2, 3)).tolist() == [[3.0, 2.0, 3.0, 6.0], [7.0, 6.0, 4.0, 7.0]]
    with pytest.raises(InputError, match="k must be"):
        M.knn_radii(x, 4)


def test_identical_sets():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(6))
    r = M.manifold_metrics(x, x.clone(), k_pr=3, k_dc=5)
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0
    # every real ball B(X_i, NND_5(X_i)) holds exactly X_i and its 5 neighbours: density = (k + 1) / k
    assert r["density"] == pytest.approx(6 / 5)


def test_disjoint_far_sets():
    g = torch.Generator().manual_seed(7)
    real, fake = torch.randn(100, 4, generator=g), torch.randn(80, 4, generator=g) + 100
    assert M.manifold_metrics(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_mode_collapse_high_precision_low_recall_and_coverage():
    g = torch.Generator().manual_seed(8)
    centres = torch.tensor([[10.0, 10.0], [10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0]])
    real = (centres[:, None] + torch.randn(4, 150, 2, generator=g)).reshape(-1, 2)
    fake = centres[0] + torch.randn(600, 2, generator=g)  # all in one of the four clusters
    p, r = M.precision_recall(real, fake)
    d, c = M.density_coverage(real, fake)
    assert p > 0.9 and r < 0.3 and c < 0.3
    assert 0.2 <= c <= 0.25  # at most the collapsed cluster's quarter of the real balls


def test_large_sets_run_in_bounded_blocks(monkeypatch):
    # 3000 x 2500 in 1 MB blocks: the same result as one block
    g = torch.Generator().manual_seed(9)
    real, fake = torch.randn(3000, 8, generator=g), torch.randn(2500, 8, generator=g) + 0.2
    want = M.manifold_metrics(real, fake)
    monkeypatch.setattr(M, "DISTANCE_BLOCK_BYTES", 2 ** 20)
    assert M.manifold_metrics(real, fake) == pytest.approx(want, abs=1e-12)


def test_manifold_bad_k():
    x = torch.randn(5, 2)
    with pytest.raises(InputError, match="k must be an integer in 1..4"):
        M.precision_recall(x, x, k=5)
    with pytest.raises(InputError, match="k must be"):
        M.density_coverage(x, x, k=0)


# -- modes ---------------------------------------------------------------------------------------------------
def _labels(counts):
    return torch.cat([torch.full((c,), m, dtype=torch.int64) for m, c in enumerate(counts)])


def test_mode_metrics_hand_made_histograms():
    gen = _labels([60, 37, 2, 1])  # n = 100; uniform share 25, threshold 10% of it = 2.5
    data = _labels([50, 50, 50, 50])
    r = M.mode_metrics(gen, data, 4)
    assert r["histogram_gen"] == [60, 37, 2, 1] and r["histogram_data"] == [50] * 4
    assert r["modes_covered"] == 4
    assert r["modes_covered_at_threshold"] == 2
    # KL(gen || data) = sum p log(p / 0.25); the smoothing (eps = 1e-6) moves it by < 1e-4
    p = [0.6, 0.37, 0.02, 0.01]
    want = sum(x * math.log(x / 0.25) for x in p)
    assert want == pytest.approx(0.587634, abs=1e-6)
    assert r["kl_gen_data"] == pytest.approx(want, abs=1e-4)
    assert r["kl_data_gen"] == pytest.approx(sum(0.25 * math.log(0.25 / x) for x in p), abs=1e-4)


def test_mode_metrics_threshold_is_inclusive_and_missing_modes():
    # n = 40 over 4 modes: share 10, threshold 1 sample; a mode with exactly 1 sample counts
    r = M.mode_metrics(_labels([30, 9, 1, 0]), _labels([1, 1, 1, 1]), 4)
    assert r["modes_covered"] == 3 and r["modes_covered_at_threshold"] == 3
    # a missing mode makes KL(data || gen) large but finite: about 0.25 * log(0.25 / eps)
    assert math.isfinite(r["kl_data_gen"]) and r["kl_data_gen"] > 0.25 * math.log(0.25 / M.KL_EPS) - 0.5
    same = M.mode_metrics(_labels([3, 5, 7, 9]), _labels([3, 5, 7, 9]), 4)
    assert same["kl_gen_data"] == pytest.approx(0.0, abs=1e-12) and same["kl_data_gen"] == pytest.approx(0.0, abs=1e-12)


def test_unrecognised_samples():
    # label -1: counted in n (so in the threshold) and as its own KL bin, never as a covered mode
    gen = torch.cat([_labels([10, 10, 10, 0]), torch.full((70,), M.UNRECOGNISED)])  # n = 100, share 25, need 2.5
    data = _labels([5, 5, 5, 5])
    r = M.mode_metrics(gen, data, 4)
    assert r["histogram_gen"] == [10, 10, 10, 0] and r["unrecognised_gen"] == 0.7 and r["unrecognised_data"] == 0
    assert r["modes_covered"] == 3 and r["modes_covered_at_threshold"] == 3
    # 70% of the mass where the data has (almost) none: KL(gen || data) ~ 0.7 log(0.7 / eps) + 3 * 0.1 log(0.1 / 0.25)
    want = 0.7 * math.log(0.7 / M.KL_EPS) + 0.3 * math.log(0.1 / 0.25)
    assert r["kl_gen_data"] == pytest.approx(want, rel=1e-3)
    assert M.mode_histogram(torch.tensor([-1, 0, 2, -1]), 3).tolist() == [1, 0, 1, 2]


def test_mode_collapse_to_one_mode():
    r = M.mode_metrics(torch.zeros(100, dtype=torch.int64), torch.arange(16).repeat(10), 16)
    assert r["modes_covered"] == 1 and r["modes_covered_at_threshold"] == 1
    # all mass on one of 16 equal modes: log 16, less ~2e-4 from the 15 smoothed empty bins (eps log(eps / q))
    assert r["kl_gen_data"] == pytest.approx(math.log(16), abs=5e-4)


def test_mode_metrics_bad_labels():
    with pytest.raises(InputError, match="0..3"):
        M.mode_metrics(torch.tensor([0, 4]), torch.tensor([0, 1]), 4)
    with pytest.raises(InputError, match="integers"):
        M.mode_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 4)
    with pytest.raises(InputError, match="at least one"):
        M.mode_metrics(torch.tensor([], dtype=torch.int64), torch.tensor([0, 1]), 4)
