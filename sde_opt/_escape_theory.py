"""Escape-rate theory beside the Monte Carlo: Kramers, Eyring–Kramers, the anisotropic
formula for SGD noise (Xie, Sato & Sugiyama 2021), and the exact 1-D mean first-passage
time by quadrature.

Conventions: the SDE is ``dθ = −∇L dt + √(lr/B · D) dW`` (time ``t = k · lr``). With
isotropic noise ``D = v I`` this is overdamped Langevin dynamics at temperature
``T = lr · v / (2B)`` (``dθ = −∇L dt + √(2T) dW``).
"""

from __future__ import annotations

import numpy as np

from ._checks import barrier_and_temperature


def temperature(lr, batch_size, variance=1.0) -> float:
    """``T = lr · v / (2B)``: the Langevin temperature of the SGD SDE with ``D = v I``."""
    if lr <= 0 or batch_size < 1 or variance < 0:
        raise ValueError("need lr > 0, batch_size >= 1 and variance >= 0.")
    return lr * variance / (2.0 * batch_size)


def kramers_rate(barrier, curvature_min, curvature_saddle, temperature) -> float:
    """Kramers' rate ``k = √(κ_m |κ_s|)/(2π) · exp(−ΔL/T)`` for ``dx = −L'(x)dt + √(2T)dW``
    in 1-D (Kramers 1940; overdamped limit).

    Valid when ``ΔL/T ≫ 1`` (the relative error is ``O(T/ΔL)``: about 10% at ``ΔL/T = 5``)
    and the minimum and saddle are non-degenerate. ``1/k`` is the mean time to go over the
    barrier and on into the other basin; the mean time to *reach the saddle point* is
    about half of it (from there a path goes either way).
    """
    barrier_and_temperature(barrier, temperature)
    if curvature_min <= 0 or curvature_saddle >= 0:
        raise ValueError("need curvature_min > 0 (a minimum) and curvature_saddle < 0 (a barrier top).")
    return float(np.sqrt(curvature_min * abs(curvature_saddle)) / (2 * np.pi) * np.exp(-barrier / temperature))


def eyring_kramers_rate(hessian_min, hessian_saddle, barrier, temperature) -> float:
    """Eyring–Kramers rate in ``d`` dimensions under isotropic noise (Bovier et al. 2004):
    ``k = |λ₋|/(2π) · √(det H_m / |det H_s|) · exp(−ΔL/T)``, with ``λ₋`` the one negative
    eigenvalue of the saddle Hessian ``H_s``. Same validity as :func:`kramers_rate`
    (``ΔL/T ≫ 1``, index-1 saddle, non-degenerate Hessians)."""
    barrier_and_temperature(barrier, temperature)
    hm = np.asarray(hessian_min, np.float64)
    hs = np.asarray(hessian_saddle, np.float64)
    lm, ls = np.linalg.eigvalsh(hm), np.linalg.eigvalsh(hs)
    if lm.min() <= 0:
        raise ValueError("hessian_min must be positive definite.")
    if not (ls[0] < 0 < ls[1] if ls.size > 1 else ls[0] < 0):
        raise ValueError("hessian_saddle must have exactly one negative eigenvalue (an index-1 saddle).")
    pref = abs(ls[0]) / (2 * np.pi) * np.sqrt(np.prod(lm) / abs(np.prod(ls)))
    return float(pref * np.exp(-barrier / temperature))


def xie_escape_time(barrier, h_min, h_saddle, lr, batch_size, s=0.5) -> float:
    """Mean escape time of SGD with Hessian-shaped noise ``D = H`` (Xie, Sato & Sugiyama
    2021, Thm 3.2, 1-D escape path):

    ``τ = 2π/|H_b| · exp[(2BΔL/lr) (s/H_a + (1 − s)/|H_b|)]``,

    ``H_a`` (``h_min``) and ``H_b`` (``h_saddle``) the curvatures along the escape direction
    at the minimum and the saddle, ``s ∈ [0, 1]`` a path-dependent constant. The exponent
    makes ``log τ`` linear in ``1/H_a`` (the exponential preference for flat minima).
    Valid in the same low-temperature regime as Kramers, with the noise near the minimum
    set by ``H_a`` and near the saddle by ``|H_b|``. For noise frozen at the minimum's
    Hessian (``D = H_a`` along the path) the exact low-temperature answer is Kramers at
    ``T = lr H_a/(2B)``: the exponent of ``s = 1`` with the Kramers prefactor.
    """
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"s must be in [0, 1], got {s}.")
    if h_min <= 0 or h_saddle == 0:
        raise ValueError("need h_min > 0 and h_saddle != 0.")
    expo = 2 * batch_size * barrier / lr * (s / h_min + (1 - s) / abs(h_saddle))
    return float(2 * np.pi / abs(h_saddle) * np.exp(expo))


def mean_exit_time_1d(drift, diffusion2, x0, left, right, n_grid: int = 20_001) -> float:
    """Exact mean first-passage time of ``dx = b(x)dt + σ(x)dW`` from ``x0`` to ``right``,
    with a reflecting wall at ``left`` (put it far into the well for a free process):

    ``T(x0) = ∫_{x0}^{right} e^{−Φ(y)} ∫_{left}^{y} 2e^{Φ(z)}/σ²(z) dz dy``, ``Φ = ∫ 2b/σ²``,

    by the trapezoidal rule on ``n_grid`` points (error ``O(n_grid⁻²)``), in log space.
    ``drift`` and ``diffusion2`` are vectorised NumPy functions of ``x``; ``σ² > 0`` on the grid.
    """
    if not left < x0 < right:
        raise ValueError(f"need left < x0 < right, got {left}, {x0}, {right}.")
    x = np.linspace(left, right, n_grid)
    b = np.asarray(drift(x), np.float64)
    s2 = np.asarray(diffusion2(x), np.float64)
    if np.any(s2 <= 0):
        raise ValueError("diffusion2 must be > 0 on [left, right].")
    phi = _cumtrapz(2 * b / s2, x)
    # inner(y) = ∫_left^y 2e^{Φ(z)}/σ²(z) dz, accumulated in log space (Φ spans many e-folds)
    lf = np.log(2.0 / s2) + phi
    dx = np.diff(x)
    pieces = np.log(0.5 * dx) + np.logaddexp(lf[1:], lf[:-1])
    log_inner = np.concatenate([[-np.inf], np.logaddexp.accumulate(pieces)])
    integrand = np.exp(log_inner - phi)  # e^{−Φ(y)} ∫ 2e^{Φ}/σ²
    outer = _cumtrapz(integrand, x)
    return float(outer[-1] - np.interp(x0, x, outer))


def _cumtrapz(f, x):
    out = np.zeros_like(f)
    out[1:] = np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(x))
    return out
