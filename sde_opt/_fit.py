"""One straight-line fit for every power law and exponential law the studies measure, and one
interval for every measured proportion (:func:`proportion_interval`).

A power law ``y = C x^a`` is the line ``log y = log C + a log x``; an Arrhenius-type law
``τ = C e^{a x}`` is ``log τ = log C + a x``. The callers take the logarithms and call
:func:`fit_line`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LineFit:
    """``y ≈ intercept + slope · x``.

    Attributes:
        slope, intercept: the least-squares coefficients.
        stderr: standard error of the slope: ``√[(AᵀWA)⁻¹]₁₁`` from the given point errors
            (weighted fit), or the ordinary least-squares error (residual variance
            ``χ²/(m − 2)`` times ``[(AᵀA)⁻¹]₁₁``) when no errors are given.
        chi2_dof: ``Σ wᵢ rᵢ² / (m − 2)`` (``wᵢ = 1`` unweighted); about 1 when the points
            scatter about the line as their errors say, larger when they are off a line.
        dof: ``m − 2``.
    """

    slope: float
    intercept: float
    stderr: float
    chi2_dof: float
    dof: int


def fit_line(x, y, sigma=None) -> LineFit:
    """Weighted least squares of ``y`` on ``x`` with point standard errors ``sigma``
    (weights ``1/σᵢ²``; ``None``: unweighted), by the normal equations
    ``(AᵀWA) c = AᵀWy`` with ``A = [1, x]`` (e.g. Press et al., *Numerical Recipes*, §15.2).

    Examples:
        >>> fit = fit_line([1.0, 2.0, 3.0], [1.0, 3.0, 5.0])
        >>> round(fit.slope, 12), round(fit.intercept, 12)
        (2.0, -1.0)
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got shapes {x.shape} and {y.shape}.")
    w = np.ones_like(x) if sigma is None else 1.0 / np.asarray(sigma, np.float64) ** 2
    a = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    coef = cov @ (a.T @ (w * y))
    dof = x.size - 2
    chi2 = float(np.sum(w * (y - a @ coef) ** 2) / max(dof, 1))
    var = cov[1, 1] * (chi2 if sigma is None else 1.0)
    return LineFit(slope=float(coef[1]), intercept=float(coef[0]), stderr=float(np.sqrt(var)), chi2_dof=chi2, dof=dof)


def power_law_exponent(x, y) -> float:
    """The exponent ``a`` of ``y ∝ x^a`` by an unweighted line through ``(log x, log |y|)``."""
    return fit_line(np.log(np.asarray(x, np.float64)), np.log(np.abs(np.asarray(y, np.float64)))).slope


def proportion_interval(k: int, n: int, confidence: float = 0.95, method: str = "exact") -> tuple[float, float]:
    """Interval of a binomial proportion ``k/n``: ``(low, high)``. ``method="exact"``:
    Clopper–Pearson (coverage at least ``confidence``); ``"wilson"``: the Wilson score
    interval (coverage close to ``confidence``, shorter). ``n = 0`` gives ``(nan, nan)``.

    Examples:
        >>> from sde_opt.experiments import proportion_interval
        >>> [round(x, 3) for x in proportion_interval(0, 64, method="wilson")]
        [0.0, 0.057]
        >>> [round(x, 3) for x in proportion_interval(0, 64)]
        [0.0, 0.056]
    """
    from scipy import stats

    if method not in ("exact", "wilson"):
        raise ValueError(f"method must be 'exact' (Clopper-Pearson) or 'wilson', got {method!r}.")
    if n <= 0:
        return float("nan"), float("nan")
    a = 1.0 - confidence
    if method == "exact":
        low = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
        high = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
        return low, high
    z = float(stats.norm.ppf(1 - a / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))
