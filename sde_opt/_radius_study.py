"""Does the stochastic stability radius scale like ``1/ρ(H)``? A measurement, not an assumption.

The landscapes are 1-D wells around a minimum at 0 whose curvature ``κ = L''(0)`` is the
sharpness, in three families:

* ``"quadratic"``: ``L(e) = ½ κ e²``, no barrier (the Ornstein–Uhlenbeck baseline);
* ``"fixed_barrier"``: the double well ``L(e) = ½ κ e² (1 + e/(2a))²`` (minima at 0 and
  ``−2a``, barrier ``h = κ a²/8`` at ``−a``) with ``h`` held fixed, so the basin narrows
  as ``a = √(8h/κ)``;
* ``"fixed_width"``: the same double well with ``a`` held fixed, so the barrier grows as
  ``h = κ a²/8``.

The noise covariance at the minimum is either ``D = H = κ`` (``"hessian"``) or a constant
``D = σ²`` (``"isotropic"``), frozen (state-independent). The continuous model is the
SDE ``dθ = −∇L dt + √(lr/B · D) dW`` integrated finely (``dt = lr/substeps``); the
discrete algorithm is real mini-batch SGD on the finite sum ``fᵢ(θ) = L(θ) + ξᵢ θ`` whose
centred scalars ``ξᵢ`` have variance exactly ``D``: the same landscape and the same noise
covariance as the SDE, with real batches. The parameters of a family are data leaves of
the :class:`~sde_opt.Problem` (not constants in its loss), so one compiled kernel serves
every ``κ``.

For each setting the radius ``r(δ)`` at horizon ``T`` is measured over a range of ``κ``
and the exponent ``p`` of ``r ∝ κ^p`` is fitted by weighted least squares on
``log r = c + p log κ`` (weights from the order-statistics intervals; the standard error
inflated by the lack of fit when the points do not lie on a line). The claim
``r ∝ 1/ρ(H)`` is ``p = −1``.

Linear theory (the quadratic family) predicts: the SDE's stationary variance is
``lr·D/(2Bκ)``, so ``p ≈ 0`` for ``D = H`` and ``p ≈ −1/2`` for isotropic noise, up to a
slowly growing factor from the maximum over ``κT`` relaxation times; discrete SGD has
variance ``lr·D/(Bκ(2 − lr κ))``, which blows up as ``lr κ → 2``.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from scipy import stats

from ._checkpoint import sub_checkpoint
from ._dynamics import SGD, SGDSDE, NoisyGD
from ._io import register_result
from ._progress import Progress
from ._fit import fit_line
from ._noise import ConstantNoise
from ._problem import Problem
from ._stability import BGK_BETA, stability_radius

FAMILIES = ("quadratic", "fixed_barrier", "fixed_width")
NOISES = ("hessian", "isotropic")
DYNAMICS = ("sde", "sgd", "noisy_gd")


def _well_loss(theta, ex):
    e = theta[0]
    return 0.5 * ex["kappa"] * e**2 * (1.0 + e * ex["inv2a"]) ** 2 + ex["xi"] * e


def well_family(family: str, kappa, *, barrier=1.0, width=math.sqrt(2.0), noise_var=1.0, n_examples: int = 64,
                key=None) -> Problem:
    """A 1-D well of curvature ``kappa`` at its minimum 0 from ``family`` (see the module
    docstring), as the finite sum ``fᵢ(e) = L(e) + ξᵢ e`` with centred ``ξᵢ`` of variance
    exactly ``noise_var`` (so real SGD has ``D = noise_var`` and ``L`` itself is the mean).

    ``info`` holds ``minima``, ``hessians_min``, ``barrier`` (``inf`` for the quadratic),
    ``half_width`` ``a`` and ``noise_cov``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    kappa = float(kappa)
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}.")
    if family == "quadratic":
        a, h = math.inf, math.inf
    elif family == "fixed_barrier":
        h = float(barrier)
        a = math.sqrt(8.0 * h / kappa)
    else:
        a = float(width)
        h = kappa * a * a / 8.0
    key = jr.key(0) if key is None else key
    z = np.asarray(jr.normal(key, (n_examples,)), dtype=np.float64)
    z = (z - z.mean()) / z.std()
    dtype = jnp.result_type(float)
    xi = jnp.asarray(math.sqrt(float(noise_var)) * z, dtype)
    ones = jnp.ones(n_examples, dtype)
    data = {"kappa": kappa * ones, "inv2a": (0.0 if math.isinf(a) else 1.0 / (2.0 * a)) * ones, "xi": xi}
    info = {"dim": 1, "minima": jnp.zeros((1, 1), dtype), "hessians_min": jnp.full((1, 1, 1), kappa, dtype),
            "barrier": h, "half_width": a, "noise_cov": jnp.full((1, 1), float(noise_var), dtype)}
    return Problem(_well_loss, data, info=info, name=f"well_{family}")


class ExponentFit(eqx.Module):
    """``r ∝ κ^p``: ``exponent`` with its interval ``[low, high]`` (``confidence``), the
    intercept, the lack-of-fit ``chi2`` per degree of freedom, the local exponents
    between neighbouring points and the range ``[kappa_min, kappa_max]`` of the points fitted."""

    exponent: float
    low: float
    high: float
    stderr: float
    intercept: float
    chi2_dof: float
    local: np.ndarray
    kappa_min: float = math.nan
    kappa_max: float = math.nan


def fit_exponent(kappa, radius, low, high, confidence: float = 0.95) -> ExponentFit:
    """Weighted least squares of ``log r`` on ``log κ``. Each point's standard error is
    ``(log high − log low)/(2z)`` from its order-statistics interval; the slope's standard
    error is multiplied by ``√(χ²/dof)`` when that exceeds 1 (the points are off a line), and
    the interval uses Student's t with ``m − 2`` degrees of freedom."""
    x = np.log(np.asarray(kappa, dtype=np.float64))
    r, lo, hi = (np.asarray(v, dtype=np.float64) for v in (radius, low, high))
    ok = np.isfinite(r) & (r > 0) & np.isfinite(hi) & (lo > 0)
    if ok.sum() < 3:
        raise ValueError("need at least 3 finite radii with finite intervals to fit an exponent.")
    z = stats.norm.ppf(0.5 + confidence / 2)
    y = np.log(r[ok])
    # a floor of 0.5% relative error guards against degenerate intervals (ties, e.g. SGD with lr·κ = 1)
    se = np.maximum((np.log(hi[ok]) - np.log(lo[ok])) / (2 * z), 5e-3)
    fit = fit_line(x[ok], y, se)
    dof, chi2 = fit.dof, fit.chi2_dof
    se_p = fit.stderr * math.sqrt(max(chi2, 1.0))
    tq = stats.t.ppf(0.5 + confidence / 2, max(dof, 1))
    local = np.diff(np.log(r)) / np.diff(x)
    return ExponentFit(exponent=fit.slope, low=fit.slope - tq * se_p, high=fit.slope + tq * se_p,
                       stderr=float(se_p), intercept=fit.intercept, chi2_dof=chi2, local=local,
                       kappa_min=float(np.min(np.asarray(kappa, np.float64)[ok])),
                       kappa_max=float(np.max(np.asarray(kappa, np.float64)[ok])))


@dataclasses.dataclass
class RadiusStudyConfig:
    """Sizes and levels of :func:`radius_study` (the defaults are the full study).

    ``grid_correction``: the SDE is watched only every ``dt``, which misses the top of
    each excursion; add ``0.5826 σ √dt`` (``σ = √(lr·D/B)``; Broadie, Glasserman & Kou
    1997) to its radii so they estimate the continuous path's. Without it the bias grows
    with ``κ`` when ``D = H`` and would tilt the fitted exponent."""

    kappas: tuple = (1.0, 1.6, 2.5, 4.0, 6.3, 9.0, 12.0, 15.0, 17.5, 19.0)
    families: tuple = FAMILIES
    noises: tuple = NOISES
    dynamics: tuple = ("sde", "sgd")
    lr: float = 0.1
    batch_size: int = 1
    horizon: float = 10.0
    substeps: int = 10
    delta: float = 0.1
    barrier: float = 1.0
    width: float = math.sqrt(2.0)
    iso_variance: float = 4.0
    n_paths: int = 2000
    n_examples: int = 64
    confidence: float = 0.95
    grid_correction: bool = True


def _dynamics(kind: str, prob: Problem, cfg: RadiusStudyConfig, d_min: float):
    noise = ConstantNoise(jnp.full((1, 1), d_min))
    if kind == "sde":
        return SGDSDE(prob, cfg.lr, cfg.batch_size, noise), cfg.lr / cfg.substeps
    if kind == "noisy_gd":
        return NoisyGD(prob, cfg.lr, cfg.batch_size, noise), None
    if kind == "sgd":
        return SGD(prob, cfg.lr, cfg.batch_size), None
    raise ValueError(f"dynamics must be one of {DYNAMICS}, got {kind!r}.")


class RadiusSetting(eqx.Module):
    """``r(δ)`` against ``κ`` for one (``family``, ``noise``, ``dynamics``) of a :func:`radius_study`.

    Attributes:
        radius, low, high: ``(m,)`` the radius at each ``κ`` with its interval; ``nan``
            where the discrete algorithm is linearly unstable (``lr κ ≥ 2``) or its paths
            blew up (infinite excursions).
        escaped: ``(m,)`` fraction of paths that reached the barrier ``−a``.
        curve: ``(m, len(curve_delta))`` radii at several ``δ``.
        fit: :class:`ExponentFit` over every finite point (``None`` if fewer than 3).
        fit_local: the same over the *local* regime (fewer than ``δ/2`` of the paths
            reached the barrier and, for discrete algorithms, ``lr κ ≤ 1``), where the
            linearisation at the minimum describes the radius.
    """

    radius: np.ndarray
    low: np.ndarray
    high: np.ndarray
    escaped: np.ndarray
    curve: np.ndarray
    fit: ExponentFit | None
    fit_local: ExponentFit | None
    family: str = eqx.field(static=True)
    noise: str = eqx.field(static=True)
    dynamics: str = eqx.field(static=True)

    @property
    def name(self) -> str:
        return f"{self.family}/{self.noise}/{self.dynamics}"


class RadiusStudy(eqx.Module):
    """A :func:`radius_study`: the grid ``kappas``, the levels ``curve_delta`` of the curves,
    one :class:`RadiusSetting` per (family, noise, dynamics) and the config."""

    kappas: np.ndarray
    curve_delta: np.ndarray
    settings: tuple[RadiusSetting, ...]
    config: RadiusStudyConfig = eqx.field(static=True)

    def setting(self, family: str, noise: str, dynamics: str) -> RadiusSetting:
        for s in self.settings:
            if (s.family, s.noise, s.dynamics) == (family, noise, dynamics):
                return s
        raise ValueError(f"no setting {family}/{noise}/{dynamics}; the study has "
                         f"{[s.name for s in self.settings]}.")

    def table(self) -> str:
        """The fitted exponents as a text table: over all points, and over the local regime."""
        rows = [f"{'setting':<34} {'range':<5} {'κ':>11} {'p (r ∝ κ^p)':>11} {'95% interval':>19} {'χ²/dof':>8}"
                f"  p = −1?"]
        for st in sorted(self.settings, key=lambda s: s.name):
            for tag, fit in (("all", st.fit), ("local", st.fit_local)):
                if fit is None:
                    rows.append(f"{st.name:<34} {tag:<5} {'—':>11}")
                    continue
                verdict = "consistent" if fit.low <= -1 <= fit.high else "rejected"
                rows.append(f"{st.name:<34} {tag:<5} {fit.kappa_min:>5.3g}–{fit.kappa_max:<5.3g} {fit.exponent:>11.3f} "
                            f"[{fit.low:>7.3f}, {fit.high:>7.3f}] {fit.chi2_dof:>8.2f}  {verdict}")
        return "\n".join(rows)


def radius_study(config: RadiusStudyConfig | None = None, *, key, progress=None, checkpoint=None) -> RadiusStudy:
    """Measure ``r(δ)`` against ``κ`` for every (family, noise, dynamics) and fit the exponent
    (see :class:`RadiusSetting`); paths of a discrete algorithm that blew up count as
    infinite excursions. ``progress``: a bar over the points (``None``: in a terminal or
    notebook); ``checkpoint``: a directory that keeps every point's runs (one sub-directory
    each, see :func:`sde_opt.simulate`), so a killed study resumes where it stopped.
    """
    cfg = RadiusStudyConfig() if config is None else config
    kappas = np.asarray(cfg.kappas, dtype=np.float64)
    curve_deltas = np.array([0.5, 0.25, 0.1, 0.05])
    results = []
    settings = [(f, n, d) for f in cfg.families for n in cfg.noises for d in cfg.dynamics]
    bar = Progress(len(settings) * len(kappas), "stability radius", progress)
    for s_idx, (fam, noise, dyn_kind) in enumerate(settings):
        name = f"{fam}/{noise}/{dyn_kind}"
        rad, lo, hi, esc = (np.full(len(kappas), np.nan) for _ in range(4))
        curve = np.full((len(kappas), len(curve_deltas)), np.nan)
        for i, kappa in enumerate(kappas):
            if dyn_kind != "sde" and cfg.lr * kappa >= 2.0:
                bar.step()
                continue
            d_min = kappa if noise == "hessian" else cfg.iso_variance
            prob = well_family(fam, kappa, barrier=cfg.barrier, width=cfg.width, noise_var=d_min,
                               n_examples=cfg.n_examples, key=jr.fold_in(key, 10_000))
            dyn, dt = _dynamics(dyn_kind, prob, cfg, d_min)
            step = cfg.lr if dt is None else dt
            n_steps = max(1, int(round(cfg.horizon / step)))
            res = stability_radius(dyn, jnp.zeros(1), key=jr.fold_in(jr.fold_in(key, s_idx), i), delta=cfg.delta,
                                   n_steps=n_steps, n_paths=cfg.n_paths, dt=dt, confidence=cfg.confidence,
                                   checkpoint=sub_checkpoint(checkpoint, f"{fam}-{noise}-{dyn_kind}-{i:03d}"),
                                   progress=False)
            shift = 0.0
            if dyn_kind == "sde" and cfg.grid_correction:
                shift = BGK_BETA * math.sqrt(cfg.lr * d_min / cfg.batch_size * dt)
            rad[i], lo[i], hi[i] = res.radius + shift, res.low + shift, res.high + shift
            a = prob.info["half_width"]
            esc[i] = float(np.mean(np.asarray(res.max_excursion) >= a)) if math.isfinite(a) else 0.0
            curve[i] = np.asarray(res.curve(curve_deltas).radius) + shift
            bar.step(f"{name} κ={kappa:g} r={res.radius:.4g}")
        local = esc < cfg.delta / 2
        if dyn_kind != "sde":
            local &= cfg.lr * kappas <= 1.0
        fits = []
        for sel in (np.isfinite(rad), np.isfinite(rad) & local):
            try:
                fits.append(fit_exponent(kappas[sel], rad[sel], lo[sel], hi[sel], cfg.confidence))
            except ValueError:
                fits.append(None)
        results.append(RadiusSetting(radius=rad, low=lo, high=hi, escaped=esc, curve=curve, fit=fits[0],
                                     fit_local=fits[1], family=fam, noise=noise, dynamics=dyn_kind))
    return RadiusStudy(kappas=kappas, curve_delta=curve_deltas, settings=tuple(results), config=cfg)


register_result(ExponentFit)
register_result(RadiusSetting)
register_result(RadiusStudy)
register_result(RadiusStudyConfig)
