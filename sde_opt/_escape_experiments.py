"""Escape experiments as library functions (the notebook, the figures and the demo call these).

* :func:`escape_vs_sharpness` — mean escape time from a 1-D double-well minimum of
  curvature λ at fixed barrier, for Hessian-shaped noise (``D = H(θ*)``) and for isotropic
  noise of a fixed variance, with the exact quadrature, Kramers and Xie et al. beside it.
* :func:`escape_vs_batch` — the same against ``B/lr``.
* :func:`sharp_to_flat` — the 2-D sharp/flat toy of Zhu et al. (2019): start in the sharp
  minimum, count how many paths end in the flat one, per noise shape of equal total variance.
* :func:`sgd_vs_sde_escape` — real mini-batch SGD against its SDE on one finite-sum landscape.
"""

from __future__ import annotations


import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Float

from ._dynamics import SGD, SGDSDE, NoisyGD
from ._escape import escape_rate
from ._escape_theory import kramers_rate, mean_exit_time_1d, temperature, xie_escape_time
from ._escape import EscapeRate
from ._exit import CloserToOther, HalfSpace, first_exit
from ._io import register_result
from ._fit import fit_line
from ._noise import AbstractNoise, ConstantNoise, DiagonalNoise, IsotropicNoise, MinibatchNoise, ScaledNoise
from . import landscapes
from ._checkpoint import sub_checkpoint
from ._progress import Progress


class EscapeStudy(eqx.Module):
    """One row per setting: the measured escape statistics and the theory beside them.

    ``mean_time`` is ``1/rate`` of the censored exponential fit with its exact interval
    ``[mean_low, mean_high]``; ``exact`` is the 1-D quadrature mean first-passage time,
    ``kramers`` and ``xie`` the asymptotic formulas (NaN where they do not apply).
    ``x_name`` names the setting varied (``"sharpness"``, ``"B/lr"``), ``noise`` the noise
    shape and ``config`` the remaining arguments.
    """

    x: Float[np.ndarray, " m"]
    mean_time: Float[np.ndarray, " m"]
    mean_low: Float[np.ndarray, " m"]
    mean_high: Float[np.ndarray, " m"]
    n_exited: Float[np.ndarray, " m"]
    n_censored: Float[np.ndarray, " m"]
    exact: Float[np.ndarray, " m"]
    kramers: Float[np.ndarray, " m"]
    xie: Float[np.ndarray, " m"]
    x_name: str = eqx.field(static=True)
    noise: str = eqx.field(static=True)
    config: dict = eqx.field(static=True)

    def log_slope(self, *, inverse: bool = False) -> tuple[float, float]:
        """Weighted slope of ``log τ`` against ``x`` (``1/x`` with ``inverse=True``) and its
        standard error (:func:`fit_log_slope`)."""
        x = 1.0 / self.x if inverse else self.x
        return fit_log_slope(x, self.mean_time, self.mean_low, self.mean_high)

    def table(self) -> str:
        head = f"{self.x_name:>10} {'noise':>10} {'tau (MC)':>10} {'95% CI':>21} {'exits':>6} {'exact':>10} {'Kramers':>10} {'Xie s=1':>10}"
        rows = [head]
        for i in range(len(self.x)):
            rows.append(
                f"{self.x[i]:>10.4g} {self.noise:>10} {self.mean_time[i]:>10.4g} "
                f"[{self.mean_low[i]:>9.4g}, {self.mean_high[i]:>9.4g}] {int(self.n_exited[i]):>6d} "
                f"{self.exact[i]:>10.4g} {self.kramers[i]:>10.4g} {self.xie[i]:>10.4g}"
            )
        return "\n".join(rows)


class EscapeHeadline(eqx.Module):
    """The headline experiment (:func:`escape_headline`): one :class:`EscapeStudy` against
    sharpness per noise shape, on the same grid, and the configuration that made them."""

    hessian: EscapeStudy
    isotropic: EscapeStudy
    config: dict = eqx.field(static=True)

    @property
    def studies(self) -> tuple[EscapeStudy, EscapeStudy]:
        return self.hessian, self.isotropic

    def table(self) -> str:
        """Monte Carlo mean times with their intervals beside the exact quadrature, Kramers
        and Xie et al. (2021), then the slope of ``log τ`` in ``1/λ`` per noise."""
        rows = [f"{'noise':>10} {'lambda':>7} {'tau (Monte Carlo)':>18} {'95% interval':>20} {'exact':>9} "
                f"{'Kramers':>9} {'Xie s=1':>9}"]
        for st in self.studies:
            for i in range(len(st.x)):
                rows.append(
                    f"{st.noise:>10} {st.x[i]:>7.3f} {st.mean_time[i]:>18.4g} "
                    f"[{st.mean_low[i]:>8.4g}, {st.mean_high[i]:>8.4g}] {st.exact[i]:>9.4g} "
                    f"{st.kramers[i]:>9.4g} {st.xie[i]:>9.4g}"
                )
        for st in self.studies:
            s, se = st.log_slope(inverse=True)
            rows.append(f"{st.noise:>10}: slope of log tau in 1/lambda = {s:.2f} +- {se:.2f}")
        return "\n".join(rows)


def _well_noise(kind: str, curvature: float, iso_variance: float) -> AbstractNoise:
    if kind == "hessian":
        return ConstantNoise(jnp.array([[curvature]]))
    if kind == "isotropic":
        return IsotropicNoise(iso_variance)
    raise ValueError(f"noise must be 'hessian' or 'isotropic', got {kind!r}.")


def _double_well_escape(curvature, barrier, lr, batch_size, kind, iso_variance, *, key, n_paths, dt, exit_frac,
                        horizon_factor, max_steps_cap, checkpoint=None):
    """Escape from the left minimum of a 1-D double well across ``x = exit_frac · a``."""
    prob = landscapes.double_well(barrier=barrier, curvature=curvature)
    a = float(prob.info["half_width"])
    noise = _well_noise(kind, curvature, iso_variance)
    var = curvature if kind == "hessian" else iso_variance
    temp = temperature(lr, batch_size, var)
    x_exit = exit_frac * a
    grad = lambda x: 4 * barrier * x * (x**2 / a**2 - 1) / a**2
    exact = mean_exit_time_1d(lambda x: -grad(x), lambda x: 2 * temp + 0 * x, -a, -3 * a, x_exit)
    kr = 1.0 / kramers_rate(barrier, curvature, -curvature / 2, temp)
    xie = xie_escape_time(barrier, curvature, -curvature / 2, lr, batch_size, s=1.0) if kind == "hessian" else np.nan
    dyn = SGDSDE(prob, lr, batch_size, noise)
    step = lr if dt is None else dt
    max_steps = int(min(max_steps_cap, np.ceil(horizon_factor * exact / step)))
    ex = first_exit(dyn, jnp.array([-a]), HalfSpace(jnp.array([1.0]), x_exit), key=key, n_paths=n_paths,
                    max_steps=max_steps, dt=dt, bridge=dt is not None, checkpoint=checkpoint, progress=False)
    return escape_rate(ex), exact, kr, xie


def escape_vs_sharpness(sharpness, *, barrier=0.25, lr=0.1, batch_size=1, noise="hessian", iso_variance=None,
                        key, n_paths=2000, dt=None, exit_frac=0.5, horizon_factor=3.0, max_steps_cap=200_000,
                        progress=None, checkpoint=None) -> EscapeStudy:
    """Mean escape time against the curvature λ of a 1-D double-well minimum, barrier fixed.

    ``noise="hessian"``: SGD-shaped noise frozen at the minimum, ``D = λ`` (Zhu et al. 2019's
    "GLD Hessian"); the SDE is Langevin at ``T = lr λ/(2B)``, so ``log τ ≈ 2BΔL/(lr λ)``
    grows linearly in ``1/λ``. ``noise="isotropic"``: a fixed variance ``iso_variance``
    (default: the geometric mean of the sharpness range, so the two noises have equal trace
    there); ``T`` does not change with λ and ``log τ`` moves only through the prefactor.

    ``dt=None`` steps at ``lr`` (one step = one SGD step: the noisy-GD discretisation);
    a smaller ``dt`` integrates the SDE itself, with the Brownian-bridge exit correction.
    Paths are censored at ``horizon_factor`` × the exact mean time (at most ``max_steps_cap``).
    ``checkpoint``: a directory where every point's paths are kept (``point-000``, ...; see
    :func:`sde_opt.simulate`), so a killed sweep resumes where it stopped; ``progress``: a bar
    over the points (``None``: in a terminal or notebook).
    """
    lam = np.asarray(sharpness, np.float64)
    if iso_variance is None:
        iso_variance = float(np.exp(np.mean(np.log(lam))))
    rows = []
    bar = Progress(len(lam), f"escape vs sharpness ({noise})", progress)
    for i, c in enumerate(lam):
        rows.append(_double_well_escape(float(c), barrier, lr, batch_size, noise, iso_variance, key=jr.fold_in(key, i),
                                        n_paths=n_paths, dt=dt, exit_frac=exit_frac, horizon_factor=horizon_factor,
                                        max_steps_cap=max_steps_cap,
                                        checkpoint=sub_checkpoint(checkpoint, f"point-{i:03d}")))
        bar.step(f"lambda={c:.3g}")
    cfg = dict(barrier=barrier, lr=lr, batch_size=batch_size, noise=noise, iso_variance=iso_variance,
               n_paths=n_paths, dt=dt, exit_frac=exit_frac, horizon_factor=horizon_factor)
    return _study(lam, "sharpness", noise, rows, cfg)


HEADLINE = dict(barrier=0.25, lr=0.1, batch_size=1, lam_min=1.0, lam_max=3.0, n_lam=6, n_paths=2000, dt=0.025)


def escape_headline(config: dict | None = None, *, key, progress=None, checkpoint=None) -> EscapeHeadline:
    """The headline experiment: :func:`escape_vs_sharpness` for Hessian-shaped and for
    isotropic noise on the same sharpness grid (``HEADLINE`` defaults, overridable);
    ``checkpoint``: a directory that makes it resumable (one sub-directory per noise)."""
    cfg = dict(HEADLINE, **(config or {}))
    lam = np.geomspace(cfg["lam_min"], cfg["lam_max"], cfg["n_lam"])
    studies = [escape_vs_sharpness(lam, noise=kind, barrier=cfg["barrier"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                                   key=jr.fold_in(key, i), n_paths=cfg["n_paths"], dt=cfg["dt"], progress=progress,
                                   checkpoint=sub_checkpoint(checkpoint, kind))
               for i, kind in enumerate(("hessian", "isotropic"))]
    return EscapeHeadline(hessian=studies[0], isotropic=studies[1], config=cfg)


def escape_vs_batch(batch_over_lr, *, sharpness=2.0, barrier=0.25, lr=0.1, noise="hessian", iso_variance=None,
                    key, n_paths=2000, dt=None, exit_frac=0.5, horizon_factor=3.0, max_steps_cap=200_000,
                    progress=None, checkpoint=None) -> EscapeStudy:
    """Mean escape time against ``B/lr`` at fixed curvature (``lr`` fixed, ``B`` varied):
    for Hessian-shaped noise ``log τ ≈ (2ΔL/λ) · B/lr``. ``checkpoint``, ``progress``: as in
    :func:`escape_vs_sharpness`."""
    ratios = np.asarray(batch_over_lr, np.float64)
    batches = np.maximum(1, np.round(ratios * lr)).astype(int)
    iso_variance = sharpness if iso_variance is None else iso_variance
    rows = []
    bar = Progress(len(batches), f"escape vs B/lr ({noise})", progress)
    for i, b in enumerate(batches):
        rows.append(_double_well_escape(sharpness, barrier, lr, int(b), noise, iso_variance, key=jr.fold_in(key, i),
                                        n_paths=n_paths, dt=dt, exit_frac=exit_frac, horizon_factor=horizon_factor,
                                        max_steps_cap=max_steps_cap,
                                        checkpoint=sub_checkpoint(checkpoint, f"point-{i:03d}")))
        bar.step(f"B={b}")
    cfg = dict(sharpness=sharpness, barrier=barrier, lr=lr, noise=noise, n_paths=n_paths, dt=dt, exit_frac=exit_frac)
    return _study(batches / lr, "B/lr", noise, rows, cfg)


def _study(x, x_name, noise, rows, cfg) -> EscapeStudy:
    col = lambda f: np.array([f(r) for r in rows], np.float64)
    return EscapeStudy(
        x=np.asarray(x, np.float64), x_name=x_name, noise=noise,
        mean_time=col(lambda r: r[0].mean_time), mean_low=col(lambda r: r[0].mean_low),
        mean_high=col(lambda r: r[0].mean_high), n_exited=col(lambda r: r[0].n_exited),
        n_censored=col(lambda r: r[0].n_censored), exact=col(lambda r: r[1]), kramers=col(lambda r: r[2]),
        xie=col(lambda r: r[3]), config=cfg,
    )


def fit_log_slope(x, tau, low, high):
    """Weighted least-squares slope of ``log τ`` against ``x`` with its standard error
    (weights from the half-width of the log-interval)."""
    s = (np.log(np.asarray(high, float)) - np.log(np.asarray(low, float))) / (2 * 1.96)
    fit = fit_line(x, np.log(np.asarray(tau, float)), np.maximum(s, 1e-12))
    return fit.slope, fit.stderr


def equal_trace_noises(hessian, total_variance=None, *, covariance_source=None, theta=None) -> dict[str, AbstractNoise]:
    """Noise shapes of equal total variance ``Tr D`` around a minimum with Hessian ``H``
    (Zhu et al. 2019): isotropic, the diagonal of ``H``, ``H`` itself, ``H``'s top
    eigenvector, and, given a finite-sum ``covariance_source`` and the minimum ``at``, the
    genuine mini-batch covariance of that finite sum (state-dependent), scaled to the same
    trace at ``at``."""
    h = np.asarray(hessian, np.float64)
    tr = float(np.trace(h)) if total_variance is None else float(total_variance)
    d = h.shape[0]
    lam, vec = np.linalg.eigh(h)
    top = vec[:, -1]
    out = {
        "isotropic": IsotropicNoise(tr / d),
        "diagonal": DiagonalNoise(np.diag(h) * tr / np.trace(h)),
        "hessian": ConstantNoise(h * tr / np.trace(h)),
        "top_eigvec": ConstantNoise(tr * np.outer(top, top)),
    }
    if covariance_source is not None:
        d_at = MinibatchNoise().covariance(covariance_source, jnp.asarray(theta))
        out["covariance"] = ScaledNoise(MinibatchNoise(), tr / float(jnp.trace(d_at)), source=covariance_source)
    return out


class SharpToFlat(eqx.Module):
    """Fraction of paths that left the sharp minimum's cell for the flat one, per noise
    (``names``), with binomial standard errors and the mean exit time of the censored fit."""

    fraction: Float[np.ndarray, " m"]
    stderr: Float[np.ndarray, " m"]
    mean_exit_time: Float[np.ndarray, " m"]
    names: tuple[str, ...] = eqx.field(static=True)
    config: dict = eqx.field(static=True)

    def table(self) -> str:
        rows = [f"{'noise':>12} {'escaped':>9} {'+-SE':>7} {'mean exit t':>12}"]
        for n, f, s, t in zip(self.names, self.fraction, self.stderr, self.mean_exit_time):
            rows.append(f"{n:>12} {f:>9.3f} {s:>7.3f} {t:>12.4g}")
        return "\n".join(rows)


def default_sharp_flat():
    """The sharp/flat toy used by :func:`sharp_to_flat`: curvatures (8, 2) and (1, 1), barrier 1,
    rotated by 30° so that diagonal and full Hessian noise differ."""
    return landscapes.sharp_flat(sharp=8.0, flat=1.0, barrier=1.0, sharp_transverse=2.0, angle=np.pi / 6)


def sharp_to_flat(problem=None, noises: dict | None = None, *, lr=0.05, batch_size=1, n_steps=1000, n_paths=2000,
                  key, dt=None, shift_std=0.3, progress=None) -> SharpToFlat:
    """Start every path at the sharp minimum of a 2-D sharp/flat landscape and count the
    fraction that reaches the flat minimum's side (closer to it than to the sharp one) within
    ``n_steps``, for each noise shape. The default noises are :func:`equal_trace_noises` of
    the sharp minimum's Hessian, plus the mini-batch covariance of the finite sum
    ``fᵢ(θ) = L(θ − δᵢ)`` (``shift_std``), all of trace ``Tr H``. Binomial standard errors."""
    problem = default_sharp_flat() if problem is None else problem
    minima = problem.info["minima"]
    if noises is None:
        fs = landscapes.perturbed_sum(problem, n_examples=64, shift_std=shift_std, key=jr.fold_in(key, 10_000))
        noises = equal_trace_noises(problem.info["hessians_min"][0], covariance_source=fs, theta=minima[0])
    region = CloserToOther(minima, home=0)
    frac, se, mt = [], [], []
    bar = Progress(len(noises), "sharp -> flat", progress)
    for i, (name, noise) in enumerate(noises.items()):
        ex = first_exit(SGDSDE(problem, lr, batch_size, noise), minima[0], region, key=jr.fold_in(key, i),
                        n_paths=n_paths, max_steps=n_steps, dt=dt)
        p = float(jnp.mean(ex.exited))
        frac.append(p)
        se.append(np.sqrt(max(p * (1 - p), 1.0 / n_paths) / n_paths))
        mt.append(escape_rate(ex).mean_time)
        bar.step(name)
    cfg = dict(lr=lr, batch_size=batch_size, n_steps=n_steps, n_paths=n_paths, dt=dt, landscape=problem.name)
    return SharpToFlat(fraction=np.array(frac), stderr=np.array(se), mean_exit_time=np.array(mt),
                       names=tuple(noises), config=cfg)


class MethodRates(eqx.Module):
    """Escape rates of several methods on one problem (:func:`sgd_vs_sde_escape`): one
    :class:`~sde_opt.EscapeRate` per name in ``names``, beside the exact mean exit time of
    the SDE (``exact_mean_time``, 1-D quadrature) and the configuration."""

    rates: tuple[EscapeRate, ...]
    exact_mean_time: float
    names: tuple[str, ...] = eqx.field(static=True)
    config: dict = eqx.field(static=True)

    def __getitem__(self, name: str) -> EscapeRate:
        if name not in self.names:
            raise ValueError(f"no method {name!r}; the methods are {self.names}.")
        return self.rates[self.names.index(name)]

    def field(self, name: str) -> np.ndarray:
        """One field of every :class:`~sde_opt.EscapeRate` (``"rate"``, ``"low"``, ...), in the order of ``names``."""
        return np.array([getattr(r, name) for r in self.rates])

    def table(self) -> str:
        rows = [f"{'method':>12} {'rate':>10} {'95% interval':>23} {'mean time':>10} {'exits':>6}"]
        for n, r in zip(self.names, self.rates):
            rows.append(f"{n:>12} {r.rate:>10.4g} [{r.low:>9.4g}, {r.high:>9.4g}] {r.mean_time:>10.4g} {r.n_exited:>6d}")
        rows.append(f"{'exact SDE':>12} {1.0 / self.exact_mean_time:>10.4g} {'':>23} {self.exact_mean_time:>10.4g}")
        return "\n".join(rows)


def sgd_vs_sde_escape(*, n_examples=64, noise_std=1.1, df=None, barrier=0.25, curvature=2.0, lr=0.1, batch_size=1,
                      n_paths=2000, max_steps=20_000, key, dt_fine=None, progress=None) -> MethodRates:
    """Real mini-batch SGD against its SDE on the same finite-sum double well
    ``fᵢ(x) = L(x) + δᵢ x`` (mean exactly the double well, constant noise ``D = Var δ``;
    Gaussian ``δᵢ``, or Student-t with ``df`` degrees of freedom for heavy tails):
    escape rates of SGD, of noisy GD with the exact mini-batch covariance, and of the SGD
    SDE at ``dt = lr`` and at ``dt_fine``, plus the exact 1-D mean time of the SDE."""
    k_data, k_run = jr.split(key)
    base = landscapes.double_well(barrier=barrier, curvature=curvature)
    prob = landscapes.perturbed_sum(base, n_examples=n_examples, shift_std=noise_std, key=k_data, kind="tilt", df=df)
    a = float(base.info["half_width"])
    x0, region = jnp.array([-a]), HalfSpace(jnp.array([1.0]), 0.5 * a)
    d_var = float(MinibatchNoise().covariance(prob, x0)[0, 0])
    temp = temperature(lr, batch_size, d_var)
    grad = lambda x: 4 * barrier * x * (x**2 / a**2 - 1) / a**2
    runs = {
        "SGD": (SGD(prob, lr, batch_size), None),
        "NoisyGD": (NoisyGD(prob, lr, batch_size, MinibatchNoise()), None),
        "SDE dt=lr": (SGDSDE(prob, lr, batch_size, MinibatchNoise()), None),
    }
    if dt_fine is not None:
        runs["SDE dt fine"] = (SGDSDE(prob, lr, batch_size, MinibatchNoise()), dt_fine)
    rates = []
    bar = Progress(len(runs), "SGD vs SDE escape", progress)
    for i, (name, (dyn, dt)) in enumerate(runs.items()):
        steps = max_steps if dt is None else int(max_steps * lr / dt)
        ex = first_exit(dyn, x0, region, key=jr.fold_in(k_run, i), n_paths=n_paths, max_steps=steps, dt=dt,
                        bridge=dt is not None)
        rates.append(escape_rate(ex))
        bar.step(name)
    exact = mean_exit_time_1d(lambda x: -grad(x), lambda x: 2 * temp + 0 * x, -a, -3 * a, 0.5 * a)
    cfg = dict(n_examples=n_examples, noise_std=noise_std, df=df, barrier=barrier, curvature=curvature, lr=lr,
               batch_size=batch_size, n_paths=n_paths, max_steps=max_steps, dt_fine=dt_fine)
    return MethodRates(rates=tuple(rates), exact_mean_time=float(exact), names=tuple(runs), config=cfg)


register_result(EscapeStudy)
register_result(EscapeHeadline)
register_result(SharpToFlat)
register_result(MethodRates)
