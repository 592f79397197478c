"""Escape from strict saddles: exit times from a ball around the saddle for GD, perturbed GD,
noisy GD, mini-batch SGD and the SDE, against ``log(1/σ)/|λmin|``
(:func:`sde_opt.theory.saddle_escape_time`), and against the batch size.

Every run is :func:`sde_opt.first_exit` from the saddle with a :class:`sde_opt.Ball` region
and censoring at the horizon; the saddle and its bottom eigenvectors are confirmed by
bottom-``k`` Lanczos (:func:`sde_opt.hessian_eigs` with ``which="smallest"``).
"""

from __future__ import annotations

import equinox as eqx
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Float

from . import landscapes
from ._checks import choices, positive, positive_int, positive_ints, positive_values
from ._curvature import hessian_eigs
from ._dynamics import GD, SGD, SGDSDE, NoisyGD, PerturbedGD
from ._progress import Progress
from ._escape_theory import saddle_escape_slope, saddle_escape_time
from ._exit import Ball, first_exit
from ._fit import fit_line
from ._io import register_result
from ._noise import IsotropicNoise, MinibatchNoise, batch_factor
from ._problem import Problem

KINDS = ("gd", "gd_perturbed", "pgd", "noisy_gd", "sgd", "sde")
"""The dynamics of :func:`saddle_escape`:

* ``"gd"``: GD from the saddle exactly (the gradient is zero there: it never leaves, censored);
* ``"gd_perturbed"``: GD from ``θ_s + σ z``, ``z ~ N(0, I)``, one start per path;
* ``"pgd"``: perturbed GD (Jin et al. 2017), a uniform kick of radius ``σ`` when ``‖∇L‖`` is small;
* ``"noisy_gd"``: ``θ ← θ − lr(∇L + ξ)``, ``ξ ~ N(0, σ²/lr · I)`` (the SDE's Euler step at ``dt = lr``);
* ``"sgd"``: mini-batch SGD on the tilted finite sum ``fᵢ = L + δᵢᵀθ`` (mean exactly ``L``),
  the shifts scaled so that the noise along the bottom eigenvector is ``σ``;
* ``"sde"``: ``dθ = −∇L dt + σ dW`` at the finer step ``sde_dt``, with the bridge correction.
"""

_START = {"gd_perturbed": "gaussian", "pgd": "ball", "noisy_gd": "noise", "sgd": "noise", "sde": "noise"}


def default_saddle() -> Problem:
    """The saddle of the studies: :func:`sde_opt.landscapes.saddle` with Hessian eigenvalues
    ``(−1, −0.25, 0.5, 2)`` (two negative directions, well separated) and ``q = 1``."""
    return landscapes.saddle(jnp.array([-1.0, -0.25, 0.5, 2.0]), quartic=1.0)


class SaddleInfo(eqx.Module):
    """A confirmed strict saddle: the bottom eigenpairs of the Hessian there (Lanczos),
    ``λmin`` and its multiplicity, and the gradient norm (about zero)."""

    saddle: Float[np.ndarray, " d"]
    eigenvalues: Float[np.ndarray, " k"]
    eigenvectors: Float[np.ndarray, "k d"]
    lambda_min: float
    multiplicity: int
    grad_norm: float

    @property
    def dim(self) -> int:
        return int(self.saddle.shape[0])

    def bottom_space(self) -> np.ndarray:
        """``(multiplicity, d)`` orthonormal rows spanning the eigenspace of ``λmin``."""
        return self.eigenvectors[: self.multiplicity]


def confirm_saddle(problem: Problem, saddle, *, key, n_eigs: int = 4, method: str = "auto", rtol: float = 1e-3,
                   grad_tol: float = 1e-4) -> SaddleInfo:
    """Check that ``saddle`` is a strict saddle of ``problem``: ``‖∇L‖ ≤ grad_tol · (1 + |L|)``
    there and the smallest Hessian eigenvalue, from bottom-``n_eigs`` Lanczos
    (:func:`sde_opt.hessian_eigs`, ``which="smallest"``), is negative. Eigenvalues within
    ``rtol·|λmin|`` of ``λmin`` count towards its multiplicity; ``n_eigs`` must exceed it.

    ``method="lanczos"`` always runs Lanczos; ``"dense"`` diagonalises ``problem.hessian``
    (``d`` HVPs); ``"auto"`` is dense for ``d <= 16`` (exact, and it compiles in a fraction
    of Lanczos's time), Lanczos above.

    Raises ``ValueError`` naming what failed (not stationary, no negative curvature, the
    bottom eigenspace larger than ``n_eigs`` can show)."""
    if method not in ("auto", "lanczos", "dense"):
        raise ValueError(f"method must be 'auto', 'lanczos' or 'dense', got {method!r}.")
    theta = problem.check_params(jnp.asarray(saddle, dtype=jnp.result_type(float)), "saddle")
    d = int(theta.shape[0])
    k = min(positive_int("n_eigs", n_eigs), d)
    g = float(jnp.linalg.norm(problem.grad(theta)))
    scale = 1.0 + abs(float(problem.loss(theta)))
    if not g <= grad_tol * scale:
        raise ValueError(f"saddle is not a stationary point: |grad L| = {g:.3g} > grad_tol * (1 + |L|) = "
                         f"{grad_tol * scale:.3g}; pass the stationary point (or a larger grad_tol).")
    if method == "dense" or (method == "auto" and d <= 16):
        w, v = np.linalg.eigh(np.asarray(problem.hessian(theta), np.float64))
        vals, vecs = w[:k], v[:, :k].T
    else:
        vals, vecs = hessian_eigs(problem, theta, k, key=key, which="smallest")
    vals, vecs = np.asarray(vals, np.float64), np.asarray(vecs, np.float64)
    lo = float(vals[0])
    if not lo < 0:
        raise ValueError(f"saddle is not a strict saddle: the smallest Hessian eigenvalue is {lo:.3g} >= 0.")
    mult = int(np.sum(vals <= lo + rtol * abs(lo)))
    if mult == k and k < d:
        raise ValueError(f"the bottom eigenvalue {lo:.3g} repeats in all n_eigs={k} Lanczos pairs; pass a larger "
                         "n_eigs to see its whole eigenspace.")
    return SaddleInfo(saddle=np.asarray(theta, np.float64), eigenvalues=vals, eigenvectors=vecs, lambda_min=lo,
                      multiplicity=mult, grad_norm=g)


def network_saddle(problem: Problem) -> Float[np.ndarray, " d"]:
    """The stationary point of a two-layer tanh regression network (the MLP of
    :func:`sde_opt.problems.teacher_student`) with every weight and hidden bias zero and the
    output bias at the mean target ``ȳ``: there ``tanh(0) = 0`` and the output weights are
    zero, so every gradient vanishes, while the Hessian couples each hidden unit's input
    weights to its output weight through ``c = (1/N) Σ (yᵢ − ȳ) xᵢ``: eigenvalues
    ``±‖c‖`` (and zeros), each once per hidden unit. So ``λmin = −‖c‖`` with multiplicity
    the width: a strict saddle (a symmetric one: hidden units are interchangeable)."""
    if problem.unravel is None or problem.data is None:
        raise ValueError("problem must be a network problem with params and data, e.g. so.problems.teacher_student.")
    layers = problem.unravel(jnp.zeros_like(problem.theta0))
    if not (isinstance(layers, list) and len(layers) == 2 and layers[-1]["b"].shape == (1,)):
        raise ValueError("network_saddle expects the two-layer, one-output MLP of so.problems.teacher_student.")
    layers[-1]["b"] = jnp.mean(problem.data["y"])[None].astype(layers[-1]["b"].dtype)
    return np.asarray(jfu.ravel_pytree(layers)[0])


def network_saddle_lambda_min(problem: Problem) -> float:
    """``λmin = −‖(1/N) Σ (yᵢ − ȳ) xᵢ‖`` at :func:`network_saddle` (the closed form)."""
    x, y = np.asarray(problem.data["x"], np.float64), np.asarray(problem.data["y"], np.float64)
    return -float(np.linalg.norm(((y - y.mean())[:, None] * x).mean(axis=0)))


# ---------------------------------------------------------------------------------------
# statistics of one run
# ---------------------------------------------------------------------------------------


def _median_and_se(t, z=1.96):
    """Sample median with a distribution-free standard error from the order-statistic
    interval ``[t_(j), t_(k)]``, ``j, k = n/2 ∓ z√n/2`` (its half-width over ``z``)."""
    t = np.sort(t)
    n = t.size
    j = int(np.clip(np.floor(n / 2 - z * np.sqrt(n) / 2), 0, n - 1))
    k = int(np.clip(np.ceil(n / 2 + z * np.sqrt(n) / 2), 0, n - 1))
    return float(np.median(t)), float((t[k] - t[j]) / (2 * z))


def _summary(ex, info: SaddleInfo) -> dict:
    t = np.asarray(ex.times, np.float64)
    exited = np.asarray(ex.exited, bool)
    n = t.size
    cens = 1.0 - exited.mean()
    med, med_se = _median_and_se(t)
    if cens >= 0.5:
        med, med_se = np.nan, np.nan
    e = np.asarray(ex.positions, np.float64)[exited] - info.saddle
    if e.shape[0] >= 2:
        al = np.linalg.norm(e @ info.bottom_space().T, axis=1) / np.linalg.norm(e, axis=1)
        al_m, al_se = float(al.mean()), float(al.std(ddof=1) / np.sqrt(al.size))
    else:
        al_m, al_se = np.nan, np.nan
    return dict(mean=float(t.mean()), mean_se=float(t.std(ddof=1) / np.sqrt(n)), median=med, median_se=med_se,
                censored=float(cens), alignment=al_m, alignment_se=al_se)


def _fit_slope(x, t, se, ok, z=1.96):
    """Weighted line of ``T`` on ``x = log(1/σ)`` over the points ``ok``: slope, its standard
    error and the interval ``slope ± z·se·max(1, √χ²/dof)`` (the Birge ratio: the interval
    widens when the points scatter more than their errors say)."""
    ok = ok & np.isfinite(x) & np.isfinite(t) & (se > 0)
    if ok.sum() < 2:
        return np.nan, np.nan, np.nan, np.nan
    fit = fit_line(x[ok], t[ok], se[ok])
    half = z * fit.stderr * (max(1.0, np.sqrt(fit.chi2_dof)) if fit.dof > 0 else 1.0)
    return fit.slope, fit.stderr, fit.slope - half, fit.slope + half


def _tilted_sum(problem: Problem, *, n_examples: int, key) -> Problem:
    """``fᵢ(θ) = L(θ) + δᵢᵀθ`` with unit-variance centred shifts (scale them with :func:`_scaled`)."""
    return landscapes.perturbed_sum(problem, n_examples=n_examples, shift_std=1.0, key=key, kind="tilt")


def _scaled(fs: Problem, c) -> Problem:
    # the same loss function with scaled data: the engine's kernel does not recompile
    return eqx.tree_at(lambda p: p.data, fs, fs.data * c)


def _noise_along(problem: Problem, info: SaddleInfo) -> float:
    """``tr(P D P)/k``: the mini-batch covariance ``D`` at the saddle along its bottom eigenspace."""
    dmat = np.asarray(MinibatchNoise().covariance(problem, jnp.asarray(info.saddle, jnp.result_type(float))),
                      np.float64)
    p = info.bottom_space()
    return float(np.trace(p @ dmat @ p.T) / p.shape[0])


# ---------------------------------------------------------------------------------------
# exit time against the noise level
# ---------------------------------------------------------------------------------------


class SaddleEscape(eqx.Module):
    """Exit times from the ball of radius ``radius`` around a strict saddle, one row per
    dynamics in ``kinds`` (see :data:`KINDS`) and one column per noise level ``sigma``.

    Attributes:
        sigma: ``(m,)`` the noise levels asked for.
        sigma_eff: ``(n_kinds, m)`` the level each run had (SGD: the mini-batch noise along
            the bottom eigenvector, ``√(lr·vᵀDv/B)``; NaN for GD from the saddle).
        mean_time, mean_se: mean exit time (SDE time) and its standard error; with censored
            paths the mean of ``min(T, horizon)``, a lower bound.
        median_time, median_se: median and its order-statistic standard error (NaN when half
            or more are censored).
        censored: fraction of paths still inside at the horizon.
        alignment, alignment_se: mean ``|cos|`` between the exit point (from the saddle) and
            the bottom eigenvector (the norm of its projection on the bottom eigenspace when
            ``λmin`` repeats), over the paths that left.
        theory: the small-noise closed form of the kind's own model
            (:func:`sde_opt.theory.saddle_escape_time`: continuous for the SDE, the chain at
            ``lr`` for the discrete ones; ``inf`` for GD from the saddle).
        theory_grid: the same at the step actually simulated (the SDE at ``sde_dt``); the
            difference from ``theory`` is the discretisation allowance.
        slope, slope_se, slope_low, slope_high: ``dT/d log(1/σ_eff)`` fitted over the
            uncensored points with ``σ_eff <= config["fit_sigma_max"]``, with a 95% interval
            widened by the Birge ratio ``max(1, √(χ²/dof))``.
        theory_slope: ``1/|λmin|`` (continuous) or ``lr/log(1 + lr|λmin|)`` (discrete).
        lambda_min, multiplicity, eigenvalues: the saddle's bottom spectrum (Lanczos).
        horizon: ``(n_kinds,)`` the censoring time.
    """

    sigma: Float[np.ndarray, " m"]
    sigma_eff: Float[np.ndarray, "n m"]
    mean_time: Float[np.ndarray, "n m"]
    mean_se: Float[np.ndarray, "n m"]
    median_time: Float[np.ndarray, "n m"]
    median_se: Float[np.ndarray, "n m"]
    censored: Float[np.ndarray, "n m"]
    alignment: Float[np.ndarray, "n m"]
    alignment_se: Float[np.ndarray, "n m"]
    theory: Float[np.ndarray, "n m"]
    theory_grid: Float[np.ndarray, "n m"]
    slope: Float[np.ndarray, " n"]
    slope_se: Float[np.ndarray, " n"]
    slope_low: Float[np.ndarray, " n"]
    slope_high: Float[np.ndarray, " n"]
    theory_slope: Float[np.ndarray, " n"]
    horizon: Float[np.ndarray, " n"]
    eigenvalues: Float[np.ndarray, " k"]
    lambda_min: float
    multiplicity: int
    kinds: tuple[str, ...] = eqx.field(static=True)
    config: dict = eqx.field(static=True)

    def index(self, kind: str) -> int:
        if kind not in self.kinds:
            raise ValueError(f"no dynamics {kind!r} in this result; it has {self.kinds}.")
        return self.kinds.index(kind)

    def table(self) -> str:
        rows = [f"saddle {self.config.get('name', '')}: lambda_min = {self.lambda_min:.4g} (x{self.multiplicity}), "
                f"radius {self.config.get('radius')}"]
        rows.append(f"{'kind':>13} {'sigma':>9} {'mean T':>8} {'+-se':>6} {'theory':>8} {'median':>8} "
                    f"{'cens':>5} {'|cos|':>6}")
        for i, kind in enumerate(self.kinds):
            for j in range(self.sigma.size):
                rows.append(f"{kind:>13} {self.sigma_eff[i, j]:>9.3g} {self.mean_time[i, j]:>8.4g} "
                            f"{self.mean_se[i, j]:>6.3f} {self.theory[i, j]:>8.4g} {self.median_time[i, j]:>8.4g} "
                            f"{self.censored[i, j]:>5.2f} {self.alignment[i, j]:>6.3f}")
        for i, kind in enumerate(self.kinds):
            rows.append(f"{kind:>13}: dT/dlog(1/sigma) = {self.slope[i]:.4g} +- {self.slope_se[i]:.2g} "
                        f"[{self.slope_low[i]:.4g}, {self.slope_high[i]:.4g}], theory {self.theory_slope[i]:.4g}")
        return "\n".join(rows)


def _run_kind(kind, problem, info, sigma, *, fs, lr, sde_dt, batch_size, pgd_g_thres, pgd_t_thres, region, key,
              n_paths, n_steps):
    """One first-exit run of ``kind`` at noise level ``σ``: ``(ExitTimes, σ_eff, dt)``."""
    y0 = jnp.asarray(info.saddle, jnp.result_type(float))
    dt, bridge, sig_eff = None, False, float(sigma)
    steps = n_steps
    if kind == "gd":
        dyn, sig_eff = GD(problem, lr), np.nan
    elif kind == "gd_perturbed":
        dyn = GD(problem, lr)
        y0 = y0 + sigma * jr.normal(jr.fold_in(key, 1), (n_paths, y0.shape[0]), y0.dtype)
    elif kind == "pgd":
        g_thres = abs(info.lambda_min) * sigma if pgd_g_thres is None else pgd_g_thres
        dyn = PerturbedGD(problem, lr, radius=sigma, g_thres=g_thres, t_thres=pgd_t_thres or n_steps)
    elif kind == "noisy_gd":
        dyn = NoisyGD(problem, lr, 1, IsotropicNoise(sigma**2 / lr))
    elif kind == "sde":
        dyn, dt, bridge = SGDSDE(problem, lr, 1, IsotropicNoise(sigma**2 / lr)), sde_dt, True
        steps = int(round(n_steps * lr / sde_dt))
    else:  # sgd on the tilted finite sum, shifts scaled to noise sigma along the bottom eigenvector
        unit = _noise_along(fs, info)
        c = sigma * np.sqrt(batch_size / (lr * unit))
        dyn = SGD(_scaled(fs, c), lr, batch_size)
        sig_eff = float(np.sqrt(lr * batch_factor(fs.n_examples, batch_size, True) * unit * c**2))
    ex = first_exit(dyn, y0, region, key=key, n_paths=n_paths, max_steps=steps, dt=dt, bridge=bridge)
    return ex, sig_eff, (lr if dt is None else dt)


def saddle_escape(problem: Problem | None = None, sigmas=(1e-2, 1e-3, 1e-4), *, kinds=KINDS, saddle=None,
                  radius=0.1, lr=0.05, sde_dt=None, batch_size: int = 1, n_examples: int = 64, n_paths: int = 1000,
                  n_steps: int | None = None, horizon_factor=2.5, pgd_g_thres=None, pgd_t_thres: int | None = None,
                  n_eigs: int = 4, eig_method: str = "auto", fit_sigma_max=None, key,
                  progress=None) -> SaddleEscape:
    """Exit times from the ball ``‖θ − θ_s‖ < radius`` around a strict saddle against the
    noise level ``σ``, for each dynamics in ``kinds`` (:data:`KINDS`), beside the closed form
    ``T ≈ [log(r√(2a)/σ) − E log χ_k]/a``, ``a = |λmin|`` (Jin et al. 2017; the SDE picture;
    :func:`sde_opt.theory.saddle_escape_time`), with the fitted slope ``dT/d log(1/σ)``.

    Args:
        problem: a landscape without data (default :func:`default_saddle`); with data
            (a network) every kind but ``"sgd"`` runs on its full-batch gradient.
        sigmas: the noise levels: the SDE's diffusion ``σ`` (noisy GD and SGD: the same
            noise per unit time), the start perturbation of ``"gd_perturbed"`` and the
            kick radius of ``"pgd"``.
        saddle: the saddle (default ``problem.info["saddles"][0]``), confirmed by
            :func:`confirm_saddle` (bottom-``n_eigs`` eigenpairs, ``method=eig_method``).
        lr: step of the discrete dynamics; ``sde_dt`` (default ``lr/5``) the SDE's step.
        batch_size, n_examples: SGD's batch and the size of the tilted finite sum.
        n_steps: horizon in steps of ``lr`` (default: ``horizon_factor`` × the longest
            closed-form time); GD from the saddle is censored there.
        pgd_g_thres, pgd_t_thres: perturbed GD's thresholds (default ``|λmin|·σ`` and one
            kick per run, the setting of the closed form).
        fit_sigma_max: the slopes are fitted over the uncensored points with
            ``σ_eff <= fit_sigma_max`` (default ``0.02 · radius``: the small-noise regime,
            where the closed form's corrections ``O(σ²/(|λmin| r²))`` and those of a second
            negative direction are below the statistical errors).
        key: PRNG key; ``progress``: a progress line on stderr.

    Returns:
        :class:`SaddleEscape`.
    """
    problem = default_saddle() if problem is None else problem
    sig = positive_values("sigmas", sigmas)
    kinds = choices("kinds", kinds, KINDS)
    r = float(positive("radius", radius))
    lr = float(positive("lr", lr))
    sde_dt = lr / 5 if sde_dt is None else float(positive("sde_dt", sde_dt))
    n_paths = positive_int("n_paths", n_paths)
    batch_size = positive_int("batch_size", batch_size, upper=positive_int("n_examples", n_examples),
                              upper_name="n_examples")
    if "sgd" in kinds and problem.data is not None:
        raise ValueError("kinds has 'sgd', which runs on a tilted finite sum of a landscape without data; for a "
                         "problem with data use saddle_batch_escape or leave 'sgd' out of kinds.")
    if saddle is None:
        if "saddles" not in problem.info:
            raise ValueError("saddle is required: the problem records no saddles in info['saddles'].")
        saddle = problem.info["saddles"][0]
    k_eig, k_data, k_run = jr.split(key, 3)
    info = confirm_saddle(problem, saddle, key=k_eig, n_eigs=n_eigs, method=eig_method)
    if not np.all(sig * np.sqrt(info.dim) < r):
        raise ValueError(f"sigmas must be well inside the ball: sigma * sqrt(d) < radius = {r} (got max sigma "
                         f"{sig.max():.3g}, d = {info.dim}).")
    eigs = info.eigenvalues
    step_of = {kd: (sde_dt if kd == "sde" else lr) for kd in kinds}

    def closed(kd, s, dt):
        if kd == "gd" or not np.isfinite(s) or s <= 0:
            return np.inf
        return saddle_escape_time(eigs, r, s, dt=dt, start=_START[kd], dim=info.dim)

    if n_steps is None:
        longest = max([closed(kd, float(sig.min()), step_of[kd]) for kd in kinds if kd != "gd"]
                      or [saddle_escape_time(eigs, r, float(sig.min()), dt=lr, dim=info.dim)])
        n_steps = int(np.ceil(horizon_factor * longest / lr))
    n_steps = positive_int("n_steps", n_steps)
    fs = _tilted_sum(problem, n_examples=n_examples, key=k_data) if "sgd" in kinds else None
    region = Ball(jnp.asarray(info.saddle, jnp.result_type(float)), r)

    shape = (len(kinds), sig.size)
    cols = {c: np.full(shape, np.nan) for c in ("mean", "mean_se", "median", "median_se", "censored", "alignment",
                                               "alignment_se", "sigma_eff", "theory", "theory_grid")}
    horizon = np.zeros(len(kinds))
    bar = Progress(len(kinds) * sig.size, "saddle escape", progress)
    for i, kd in enumerate(kinds):
        for j, s in enumerate(sig):
            if kd == "gd" and j > 0:  # GD from the saddle does not depend on sigma
                for c in cols:
                    cols[c][i, j] = cols[c][i, 0]
                bar.step(kd)
                continue
            ex, s_eff, dt = _run_kind(kd, problem, info, float(s), fs=fs, lr=lr, sde_dt=sde_dt, batch_size=batch_size,
                                      pgd_g_thres=pgd_g_thres, pgd_t_thres=pgd_t_thres, region=region,
                                      key=jr.fold_in(jr.fold_in(k_run, i), j), n_paths=n_paths, n_steps=n_steps)
            for c, v in _summary(ex, info).items():
                cols[c][i, j] = v
            cols["sigma_eff"][i, j] = s_eff
            cols["theory"][i, j] = closed(kd, s_eff, None if kd == "sde" else lr)
            cols["theory_grid"][i, j] = closed(kd, s_eff, dt)
            horizon[i] = float(ex.horizon)
            bar.step(f"{kd} sigma={s:.2g}")

    fit_max = 0.02 * r if fit_sigma_max is None else float(positive("fit_sigma_max", fit_sigma_max))
    fits = []
    for i, kd in enumerate(kinds):
        x = np.log(1.0 / cols["sigma_eff"][i])
        use = (cols["censored"][i] == 0) & (cols["sigma_eff"][i] <= fit_max * (1 + 1e-9))
        fits.append(_fit_slope(x, cols["mean"][i], cols["mean_se"][i], use))
    th_slope = [np.nan if kd == "gd" else saddle_escape_slope(eigs, dt=None if kd == "sde" else lr) for kd in kinds]
    cfg = dict(name=problem.name, radius=r, lr=lr, sde_dt=sde_dt, batch_size=batch_size, n_examples=n_examples,
               n_paths=n_paths, n_steps=n_steps, pgd_g_thres=pgd_g_thres, pgd_t_thres=pgd_t_thres, dim=info.dim,
               fit_sigma_max=fit_max)
    f = np.array(fits, np.float64)
    return SaddleEscape(
        sigma=sig, sigma_eff=cols["sigma_eff"], mean_time=cols["mean"], mean_se=cols["mean_se"],
        median_time=cols["median"], median_se=cols["median_se"], censored=cols["censored"],
        alignment=cols["alignment"], alignment_se=cols["alignment_se"], theory=cols["theory"],
        theory_grid=cols["theory_grid"], slope=f[:, 0], slope_se=f[:, 1], slope_low=f[:, 2], slope_high=f[:, 3],
        theory_slope=np.array(th_slope, np.float64), horizon=horizon, eigenvalues=eigs,
        lambda_min=float(info.lambda_min), multiplicity=int(info.multiplicity), kinds=kinds, config=cfg,
    )


# ---------------------------------------------------------------------------------------
# exit time against the batch size
# ---------------------------------------------------------------------------------------


class SaddleBatchEscape(eqx.Module):
    """SGD's exit time from the ball around a saddle against the batch size ``B`` at fixed
    per-example noise: ``σ_eff(B) = √(lr · c_B · vᵀDv)`` falls with ``B``
    (``c_B = (N − B)/(B(N − 1))`` without replacement, zero at ``B = N``: the full batch is
    GD and stays pinned at the saddle), so the escape takes ``≈ log(1/σ_eff)/|λmin|`` longer.

    Attributes: ``batch_size`` ``(m,)`` and, per batch size, ``sigma_eff``, ``mean_time``,
    ``mean_se``, ``median_time``, ``median_se``, ``censored``, ``theory`` (the closed form of
    the chain at ``lr``; ``inf`` where ``σ_eff = 0``), plus ``lambda_min``, ``horizon``, ``config``.
    """

    batch_size: Float[np.ndarray, " m"]
    sigma_eff: Float[np.ndarray, " m"]
    mean_time: Float[np.ndarray, " m"]
    mean_se: Float[np.ndarray, " m"]
    median_time: Float[np.ndarray, " m"]
    median_se: Float[np.ndarray, " m"]
    censored: Float[np.ndarray, " m"]
    theory: Float[np.ndarray, " m"]
    lambda_min: float
    horizon: float
    config: dict = eqx.field(static=True)

    def table(self) -> str:
        rows = [f"{'B':>5} {'sigma_eff':>10} {'mean T':>8} {'+-se':>6} {'theory':>8} {'median':>8} {'cens':>5}"]
        for i in range(self.batch_size.size):
            rows.append(f"{int(self.batch_size[i]):>5d} {self.sigma_eff[i]:>10.3g} {self.mean_time[i]:>8.4g} "
                        f"{self.mean_se[i]:>6.3f} {self.theory[i]:>8.4g} {self.median_time[i]:>8.4g} "
                        f"{self.censored[i]:>5.2f}")
        return "\n".join(rows)


def saddle_batch_escape(problem: Problem | None = None, batch_sizes=(1, 4, 16, 64), *, saddle=None, radius=0.1,
                        lr=0.05, n_examples: int = 64, shift_std=0.02, replacement: bool = False,
                        n_paths: int = 1000, n_steps: int | None = None, horizon_factor=2.5, n_eigs: int = 4,
                        eig_method: str = "auto", key, progress=None) -> SaddleBatchEscape:
    """Real mini-batch SGD from a strict saddle, exit time from the ball of radius
    ``radius`` against the batch size. On a landscape without data SGD runs on the tilted
    finite sum ``fᵢ = L + δᵢᵀθ`` (``n_examples`` shifts of standard deviation ``shift_std``;
    the mean loss is exactly ``L``); a problem with data runs on its own examples.
    ``replacement=False`` (default) draws ``B`` distinct examples, so ``B = N`` is full-batch
    GD: no noise, pinned at the saddle and censored at the horizon ``n_steps · lr`` (default
    ``horizon_factor`` × the longest finite closed-form time). In floating point the full
    batch's gradient at the saddle is a round-off ``ε`` (about 1e-17 in float64), from which
    GD would leave after ``log(r/ε)/|λmin|``; the default horizon censors well before."""
    problem = default_saddle() if problem is None else problem
    r = float(positive("radius", radius))
    lr = float(positive("lr", lr))
    k_eig, k_data, k_run = jr.split(key, 3)
    if problem.data is None:
        fs = _scaled(_tilted_sum(problem, n_examples=positive_int("n_examples", n_examples), key=k_data),
                     float(positive("shift_std", shift_std)))
    else:
        fs = problem
    bs = positive_ints("batch_sizes", batch_sizes, upper=fs.n_examples, upper_name="the number of examples")
    n_paths = positive_int("n_paths", n_paths)
    if saddle is None:
        if "saddles" not in problem.info:
            raise ValueError("saddle is required: the problem records no saddles in info['saddles'].")
        saddle = problem.info["saddles"][0]
    info = confirm_saddle(problem, saddle, key=k_eig, n_eigs=n_eigs, method=eig_method)
    unit = _noise_along(fs, info)
    sig_eff = np.sqrt([lr * batch_factor(fs.n_examples, b, replacement) * unit for b in bs])
    theory = np.array([saddle_escape_time(info.eigenvalues, r, s, dt=lr, dim=info.dim) if s > 0 else np.inf
                       for s in sig_eff])
    if n_steps is None:
        finite = theory[np.isfinite(theory)]
        if finite.size == 0:
            raise ValueError("every batch size has zero noise (B = N without replacement); pass n_steps.")
        n_steps = int(np.ceil(horizon_factor * finite.max() / lr))
    n_steps = positive_int("n_steps", n_steps)
    region = Ball(jnp.asarray(info.saddle, jnp.result_type(float)), r)
    rows = []
    bar = Progress(len(bs), "saddle escape vs batch size", progress)
    horizon = np.nan
    for i, b in enumerate(bs):
        ex = first_exit(SGD(fs, lr, b, replacement=replacement), jnp.asarray(info.saddle, jnp.result_type(float)),
                        region, key=jr.fold_in(k_run, i), n_paths=n_paths, max_steps=n_steps)
        horizon = float(ex.horizon)
        rows.append(_summary(ex, info))
        bar.step(f"B={b}")
    col = lambda c: np.array([row[c] for row in rows], np.float64)
    cfg = dict(name=problem.name, radius=r, lr=lr, n_examples=fs.n_examples, shift_std=shift_std,
               replacement=replacement, n_paths=n_paths, n_steps=n_steps, horizon_factor=horizon_factor)
    return SaddleBatchEscape(
        batch_size=np.array(bs, np.float64), sigma_eff=np.asarray(sig_eff, np.float64), mean_time=col("mean"),
        mean_se=col("mean_se"), median_time=col("median"), median_se=col("median_se"), censored=col("censored"),
        theory=theory, lambda_min=float(info.lambda_min), horizon=horizon, config=cfg,
    )


register_result(SaddleInfo)
register_result(SaddleEscape)
register_result(SaddleBatchEscape)
