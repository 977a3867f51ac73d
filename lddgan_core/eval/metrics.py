"""Sample-quality metrics as pure functions of feature tensors [N, D] (any float dtype; float64 inside) and of
predicted mode labels. Nothing here knows where the features come from (lddgan_core.eval.classifier or an
Inception network).

    fid(real, fake)                      Fréchet distance of Gaussian fits (Heusel et al. 2017)
    precision_recall(real, fake, k=3)    k-NN manifolds (Kynkäänniemi et al. 2019)
    density_coverage(real, fake, k=5)    (Naeem et al. 2020)
    manifold_metrics(real, fake)         all four with one distance pass (what evaluate uses)
    mode_metrics(gen_modes, data_modes, num_modes)   coverage and KL of the mode histograms

Pairwise distances are computed in row chunks sized by a memory budget, so 10k x 10k sets need ~64 MB.
"""
from __future__ import annotations

import torch

from ..errors import InputError

# bytes of one float64 distance block [chunk, M]; bounds memory for any set size
DISTANCE_BLOCK_BYTES = 64 * 2 ** 20
# a point counts as inside a ball B(x, r) when d <= r * (1 + BALL_RTOL): distances come from a matrix product
# (|a|^2 + |b|^2 - 2 a.b, on features centred by the real mean), whose rounding (~1e-14 relative) must not
# push a point that lies exactly on a ball's boundary (the k-th neighbour itself when the sets share points) out
BALL_RTOL = 1e-9
# modes_covered_at counts a mode when it holds at least this fraction of the uniform share n / num_modes
MODE_THRESHOLD = 0.1
# probabilities are smoothed as (p + eps) / (1 + K eps), K bins, before a KL divergence, so that a mode
# missing from one histogram gives a large but finite term (about p * log(p / eps))
KL_EPS = 1e-6


def _features(x, name: str, min_rows: int = 1) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim != 2:
        raise InputError(f"{name}: expected features [N, D], got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if x.shape[0] < min_rows:
        raise InputError(f"{name}: needs at least {min_rows} rows, got {x.shape[0]}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: features contain NaN or infinite values")
    return x


def _pair(a, b, min_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _features(a, "real", min_rows), _features(b, "fake", min_rows)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature sizes differ: real has D={a.shape[1]}, fake D={b.shape[1]}")
    return a, b


# -- Fréchet distance --------------------------------------------------------------------------------------
def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu [D], sigma [D, D]) of features [N, D]: the mean and the unbiased (N - 1) covariance, float64."""
    x = _features(feats, "features", 2)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix by eigen-decomposition (tiny negative eigenvalues,
    rounding noise, are clamped to 0)."""
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2, sqrt_sigma1: torch.Tensor | None = None) -> float:
    """d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the two matrices are similar, and the second is
    symmetric PSD, so its square root is the sum of the square roots of its eigenvalues (torch.linalg.eigh),
    no general (scipy) sqrtm needed. sqrt_sigma1 = psd_sqrt(sigma1) may be passed when one reference set is
    compared with many others."""
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise InputError(f"frechet_distance: shapes do not fit: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
                         f"sigma {tuple(s1.shape)} / {tuple(s2.shape)}")
    r1 = psd_sqrt(s1) if sqrt_sigma1 is None else torch.as_tensor(sqrt_sigma1, dtype=torch.float64)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt
    return max(float(d), 0.0)  # >= 0 in exact arithmetic; rounding can give -1e-12


def fid(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets [N, D] and [M, D] (N, M >= 2)."""
    a, b = _pair(feat_a, feat_b, 2)
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# -- k-NN manifolds ----------------------------------------------------------------------------------------
def _chunk_rows(m: int) -> int:
    return max(1, DISTANCE_BLOCK_BYTES // (8 * max(m, 1)))


def knn_radii(x: torch.Tensor, k: int | tuple[int, ...]) -> torch.Tensor:
    """Distance from each row of x [N, D] to its k-th nearest other row: [N] (or [len(k), N] for a tuple).
    The point itself (distance 0) is not counted as a neighbour; duplicates are."""
    x = _features(x, "features")
    ks = (k,) if isinstance(k, int) else tuple(k)
    if min(ks) < 1 or max(ks) >= x.shape[0]:
        raise InputError(f"k-NN radius: k must be in 1..{x.shape[0] - 1} (N - 1), got {k}")
    out = []
    for rows in x.split(_chunk_rows(x.shape[0])):
        d = torch.cdist(rows, x)
        nearest = d.topk(max(ks) + 1, dim=1, largest=False).values  # ascending; column 0 is the point itself
        out.append(nearest[:, list(ks)])
    r = torch.cat(out).T  # [len(ks), N]
    return r[0] if isinstance(k, int) else r


def _check_k(k: int, n: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise InputError(f"{name}: k must be an integer in 1..{n - 1} (set size - 1), got {k!r}")


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k_pr: int | None = 3,
                     k_dc: int | None = 5) -> dict[str, float]:
    """precision, recall (k = k_pr) and density, coverage (k = k_dc) from one pass over fake x real distances
    (k_pr=None or k_dc=None skips that pair).

    With B(x, r) the closed ball (up to BALL_RTOL) and NND_k(x) the distance from x to its k-th nearest
    neighbour in its own set, real X_1..X_N, fake Y_1..Y_M:
      precision = 1/M sum_j 1[exists i: Y_j in B(X_i, NND_k(X_i))]          (k = k_pr)
      recall    = 1/N sum_i 1[exists j: X_i in B(Y_j, NND_k(Y_j))]          (k = k_pr)
      density   = 1/(k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]          (k = k_dc)
      coverage  = 1/N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]          (k = k_dc)
    """
    real, fake = _pair(real, fake, 2)
    centre = real.mean(0)
    real, fake = real - centre, fake - centre  # distances are unchanged; the matrix-product rounding shrinks
    n, m = real.shape[0], fake.shape[0]
    if k_pr is not None:
        _check_k(k_pr, min(n, m), "precision/recall")
    if k_dc is not None:
        _check_k(k_dc, n, "density/coverage")
    ks = tuple(k for k in (k_pr, k_dc) if k is not None)
    if not ks:
        return {}
    slack = 1 + BALL_RTOL
    r_real = {k: r * slack for k, r in zip(ks, knn_radii(real, ks))}  # k -> [N]
    r_fake = knn_radii(fake, k_pr) * slack if k_pr is not None else torch.zeros(m, dtype=torch.float64)  # [M]
    in_manifold = torch.zeros(m, dtype=torch.bool)  # per fake row: inside some real k_pr-ball
    recalled = torch.zeros(n, dtype=torch.bool)  # per real row: inside some fake k_pr-ball
    covered = torch.zeros(n, dtype=torch.bool)  # per real row: its k_dc-ball holds some fake row
    density_count = 0
    step = _chunk_rows(n)
    for start in range(0, m, step):
        d = torch.cdist(fake[start:start + step], real)  # [c, N]
        if k_pr is not None:
            in_manifold[start:start + step] = (d <= r_real[k_pr]).any(1)
            recalled |= (d <= r_fake[start:start + step, None]).any(0)
        if k_dc is not None:
            in_ball = d <= r_real[k_dc]
            density_count += int(in_ball.sum())
            covered |= in_ball.any(0)
    out = {}
    if k_pr is not None:
        out.update(precision=float(in_manifold.double().mean()), recall=float(recalled.double().mean()))
    if k_dc is not None:
        out.update(density=density_count / (k_dc * m), coverage=float(covered.double().mean()))
    return out


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of fake samples inside the real
    k-NN manifold (the union of balls B(X_i, NND_k(X_i))), and the share of real samples inside the fake one."""
    r = manifold_metrics(real, fake, k_pr=k, k_dc=None)
    return r["precision"], r["recall"]


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): density = the mean over fake samples of the number of real
    k-NN balls holding it, divided by k (about 1 when the distributions match; can exceed 1); coverage = the
    share of real balls B(X_i, NND_k(X_i)) that hold at least one fake sample."""
    r = manifold_metrics(real, fake, k_pr=None, k_dc=k)
    return r["density"], r["coverage"]


# -- mode histograms ---------------------------------------------------------------------------------------
UNRECOGNISED = -1  # the mode label of a sample the classifier does not recognise (see mode_metrics)


def mode_histogram(modes, num_modes: int) -> torch.Tensor:
    """Counts [num_modes + 1] (int64) of integer labels: modes 0..num_modes-1, then the UNRECOGNISED (-1) ones."""
    modes = torch.as_tensor(modes).reshape(-1)
    if modes.is_floating_point() or modes.is_complex() or modes.dtype == torch.bool:
        raise InputError(f"mode labels must be integers, got {modes.dtype}")
    if modes.numel() and (modes.min() < UNRECOGNISED or modes.max() >= num_modes):
        raise InputError(f"mode labels must lie in 0..{num_modes - 1} (or {UNRECOGNISED}: unrecognised), got "
                         f"{int(modes.min())}..{int(modes.max())}")
    modes = modes.long().cpu()
    return torch.bincount(torch.where(modes == UNRECOGNISED, num_modes, modes), minlength=num_modes + 1)


def kl_divergence(p_counts, q_counts, eps: float = KL_EPS) -> float:
    """KL(p || q) = sum_m p_m log(p_m / q_m) in nats, of two histograms (counts) after normalising and
    smoothing each as p -> (p + eps) / (1 + K eps), K the number of bins."""
    p = torch.as_tensor(p_counts, dtype=torch.float64)
    q = torch.as_tensor(q_counts, dtype=torch.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise InputError(f"kl_divergence: histograms must be 1-D of equal length, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    if p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise InputError("kl_divergence: histograms must be non-negative with a positive total")
    k = p.shape[0]
    p = (p / p.sum() + eps) / (1 + k * eps)
    q = (q / q.sum() + eps) / (1 + k * eps)
    return float((p * (p / q).log()).sum())


def mode_metrics(gen_modes, data_modes, num_modes: int, threshold: float = MODE_THRESHOLD,
                 eps: float = KL_EPS) -> dict:
    """Mode coverage of generated samples, from predicted mode labels (0..num_modes-1, or UNRECOGNISED = -1
    for a sample the classifier does not assign to any mode) of n_gen generated and of real samples.

      modes_covered              number of modes with at least one generated sample
      modes_covered_at_threshold number of modes m with count_m >= threshold * n_gen / num_modes, i.e. at
                                 least `threshold` (default 10%) of the share a uniform generator gives each
                                 mode (n_gen counts unrecognised samples too)
      kl_gen_data                KL(gen || data) of the histograms over num_modes + 1 bins (the last one:
                                 unrecognised), smoothed with eps (see kl_divergence): large when the generator
                                 puts mass where the data has little, e.g. on unrecognisable images
      kl_data_gen                KL(data || gen): large when the generator misses modes of the data
      unrecognised_gen, unrecognised_data   the share of unrecognised samples
      histogram_gen, histogram_data         the counts per mode [num_modes] (unrecognised ones left out)
    """
    if isinstance(num_modes, bool) or not isinstance(num_modes, int) or num_modes < 1:
        raise InputError(f"num_modes must be a positive integer, got {num_modes!r}")
    hg, hd = mode_histogram(gen_modes, num_modes), mode_histogram(data_modes, num_modes)
    n, n_data = int(hg.sum()), int(hd.sum())
    if n == 0 or n_data == 0:
        raise InputError("mode_metrics: needs at least one generated and one real label")
    need = threshold * n / num_modes
    return {"modes_covered": int((hg[:num_modes] > 0).sum()),
            "modes_covered_at_threshold": int((hg[:num_modes].double() >= need - 1e-9).sum()),
            "mode_threshold": threshold,
            "kl_gen_data": kl_divergence(hg, hd, eps), "kl_data_gen": kl_divergence(hd, hg, eps),
            "unrecognised_gen": int(hg[num_modes]) / n, "unrecognised_data": int(hd[num_modes]) / n_data,
            "histogram_gen": hg[:num_modes].tolist(), "histogram_data": hd[:num_modes].tolist()}


__all__ = ["gaussian_stats", "psd_sqrt", "frechet_distance", "fid", "knn_radii", "manifold_metrics", "precision_recall",
           "density_coverage", "mode_histogram", "kl_divergence", "mode_metrics", "MODE_THRESHOLD", "KL_EPS",
           "UNRECOGNISED"]
