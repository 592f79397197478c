"""Escape-rate theory beside the Monte Carlo: Kramers, Eyring–Kramers, the anisotropic
formula for SGD noise (Xie, Sato & Sugiyama 2021), and the exact 1-D mean first-passage
time by quadrature.

Conventions: the SDE is ``dθ = −∇L dt + √(lr/B · D) dW`` (time ``t = k · lr``). With
isotropic noise ``D = v I`` this is overdamped Langevin dynamics at temperature
``T = lr · v / (2B)`` (``dθ = −∇L dt + √(2T) dW``).
"""

from __future__ import annotations

import numpy as np

from ._checks import barrier_and_temperature, positive, positive_int


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


SADDLE_STARTS = ("noise", "gaussian", "ball")


def _saddle_growth(eigenvalues, dt, rtol):
    """``(a, k, d, log-growth per unit time)`` of the unstable mode: ``a = |λmin|``, ``k`` its
    multiplicity (eigenvalues within ``rtol·a`` of ``λmin``), ``d`` the dimension."""
    lam = np.asarray(eigenvalues, np.float64)
    if lam.ndim == 2:
        lam = np.linalg.eigvalsh(0.5 * (lam + lam.T))
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(f"eigenvalues must be a non-empty finite vector (or a symmetric matrix), got shape "
                         f"{lam.shape}.")
    lo = float(lam.min())
    if lo >= 0:
        raise ValueError(f"eigenvalues must have a negative entry (a strict saddle); the smallest is {lo:.3g}.")
    a = -lo
    k = int(np.sum(lam <= lo + rtol * a))
    if dt is None:
        return a, k, lam.size, a
    dt = float(positive("dt", dt))
    return a, k, lam.size, np.log1p(dt * a) / dt


def saddle_escape_slope(eigenvalues, *, dt=None, rtol: float = 1e-3) -> float:
    """``dT/d log(1/σ)`` of :func:`saddle_escape_time`: ``1/|λmin|`` for the continuous model,
    ``dt / log(1 + dt |λmin|)`` for the chain at step ``dt`` (GD, noisy GD, SGD at ``dt = lr``)."""
    return float(1.0 / _saddle_growth(eigenvalues, dt, rtol)[3])


def saddle_escape_time(eigenvalues, radius, sigma, *, dt=None, start: str = "noise", dim: int | None = None,
                       rtol: float = 1e-3) -> float:
    """Mean first exit time from the ball ``‖θ − θ_s‖ < r`` around a strict saddle ``θ_s`` in
    the small-noise limit, for the linearised dynamics ``dθ = −Hθ dt + σ dW`` (Jin et al.
    2017 and the SDE picture: ``T ≈ log(1/σ)/|λmin|`` plus a constant given here).

    Let ``a = |λmin|`` with multiplicity ``k``. Started at the saddle, the unstable modes are
    Ornstein–Uhlenbeck processes run backwards: ``x(t) = σ e^{at} ∫₀ᵗ e^{−as} dW_s →
    σ e^{at} M``, ``M ~ N(0, I_k/(2a))``, while the stable modes stay ``O(σ)`` and every
    other unstable mode grows more slowly. So ``‖θ(t)‖ ≈ A e^{at}`` with the random
    amplitude ``A = σ χ_k/√(2a)``, the exit time is ``T = log(r/A)/a`` and, as
    ``E log χ_k = ½(ψ(k/2) + log 2)`` (``k = 1``: ``E log|Z| = −(γ + log 2)/2``),

    ``E T = [log(r√(2a)/σ) − ½(ψ(k/2) + log 2)] / a``; for ``k = 1``,
    ``E T = [log(4 a r²/σ²) + γ] / (2a)``.

    ``start`` says where the randomness comes from:

    * ``"noise"``: noise ``σ dW`` throughout, from the saddle (the SDE; noisy GD and SGD with
      ``σ² = lr · vᵀDv / B``, the noise variance along the bottom eigenvector ``v``);
    * ``"gaussian"``: no noise, started at ``θ_s + σ z``, ``z ~ N(0, I)``: ``A = σ χ_k``;
    * ``"ball"``: no noise, started at a uniform point of the ball of radius ``σ`` in
      ``d`` dimensions (perturbed GD, Jin et al. 2017): ``A = σ U^{1/d} ‖Pω‖``,
      ``E log A = log σ − 1/d + ½(ψ(k/2) − ψ(d/2))`` (``‖Pω‖² ~ Beta(k/2, (d−k)/2)``).

    ``dt`` given: the chain at step ``dt`` (Euler–Maruyama of the SDE, which for SGD-type
    dynamics is noisy GD at ``lr = dt``; GD and perturbed GD for the noiseless starts):
    the mode grows by ``ρ = 1 + dt·a`` a step, the noise amplitude becomes
    ``A = σ√dt χ_k/√(ρ² − 1)``, and the exit is the first grid time past the
    crossing: ``E T = dt [(log r − E log A)/log ρ + ½]``.

    Valid for ``σ ≪ r√a`` (relative corrections ``O(σ²/(a r²))`` from the stable modes and
    the finite escape time) and a ball small enough for the landscape to be quadratic in it
    (for the quartic of :func:`sde_opt.landscapes.saddle` the shift is
    ``log(1/(1 − q r²/a))/(2a)``). With a second negative eigenvalue ``−a₂`` close to
    ``−a`` the limit is approached slowly, as ``(σ/r)^{2(1 − a₂/a)}``.

    Args:
        eigenvalues: ``(d,)`` Hessian eigenvalues at the saddle, or the ``(d, d)`` Hessian.
        radius: ``r``, the radius of the ball.
        sigma: ``σ``: the diffusion coefficient (``"noise"``) or the size of the start
            perturbation (``"gaussian"``, ``"ball"``).
        dt: the step of the chain; ``None`` for the continuous model.
        start: ``"noise"``, ``"gaussian"`` or ``"ball"``.
        dim: the dimension of the ball of ``start="ball"`` (default: the number of
            eigenvalues; pass it when only the bottom ones are given, e.g. from Lanczos).
        rtol: eigenvalues within ``rtol·a`` of ``λmin`` count towards its multiplicity.

    Examples:
        >>> import sde_opt as so
        >>> round(so.theory.saddle_escape_time([-1.0, 2.0], radius=0.1, sigma=1e-3), 4)
        5.5869
    """
    from scipy.special import digamma

    if start not in SADDLE_STARTS:
        raise ValueError(f"start must be one of {SADDLE_STARTS}, got {start!r}.")
    r = float(positive("radius", radius))
    s = float(positive("sigma", sigma))
    a, k, d, growth = _saddle_growth(eigenvalues, dt, rtol)
    d = d if dim is None else positive_int("dim", dim)
    log_chi = 0.5 * (digamma(k / 2) + np.log(2.0))
    if start == "noise":
        if dt is None:
            log_amp = np.log(s) - 0.5 * np.log(2 * a) + log_chi
        else:
            rho = 1.0 + float(dt) * a
            log_amp = np.log(s) + 0.5 * np.log(float(dt)) - 0.5 * np.log(rho**2 - 1.0) + log_chi
    elif start == "gaussian":
        log_amp = np.log(s) + log_chi
    else:
        log_amp = np.log(s) - 1.0 / d + 0.5 * (digamma(k / 2) - digamma(d / 2))
    steps = (np.log(r) - log_amp) * (1.0 / growth)
    return float(steps if dt is None else steps + 0.5 * float(dt))


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
