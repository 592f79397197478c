"""Stability of minima: linear (GD), mean-square (SGD), Monte Carlo divergence boundaries
of the real optimizer, and the stochastic stability radius.

* **GD** is linearly stable at a minimum with Hessian ``H`` iff ``lr · λmax(H) ≤ 2``.
* **SGD** linearised at a minimum is the random linear map ``e ← (I − lr H_B) e`` with
  ``H_B`` the mean of the per-example Hessians over the batch. Its second moment obeys
  ``E[eeᵀ] ← T(E[eeᵀ])`` with

  ``T(M) = (I − lr H) M (I − lr H) + lr² c · (1/N) Σᵢ (Hᵢ − H) M (Hᵢ − H)``,

  ``c = 1/B`` with replacement and ``c = (N − B)/(B (N − 1))`` for ``B`` distinct examples
  (Wu, Ma & E 2018, "How SGD selects the global minima"; Ma & Ying 2021). SGD is
  mean-square stable iff the spectral radius ``ρ(T) ≤ 1``. This is exact for
  per-example quadratics and the linearisation otherwise.
* The **Monte Carlo boundary** runs the real optimizer's tangent map (``jax.jvp`` of its
  step at the minimum, real batches) on a population of walkers with importance
  resampling, which estimates the growth rate of ``E‖e_k‖^q`` without the heavy-tail bias
  of averaging independent paths (a cloning / Feynman–Kac estimator of a moment Lyapunov
  exponent; Giardinà, Kurchan & Peliti 2006; Tailleur & Kurchan 2007).
* The **stochastic stability radius** ``r(δ)`` is the ``(1 − δ)``-quantile of the maximal
  excursion ``sup_{t ≤ T} ‖θ_t − θ*‖`` of paths started at ``θ*``, with a distribution-free
  order-statistics confidence interval; one simulation gives the whole curve ``r(δ)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from scipy import optimize, stats

from ._checks import level, positive, positive_int, state_is_theta
from ._dynamics import AbstractDynamics
from ._engine import check_key, check_start, path_keys, resolve_dt, run_observers
from ._fit import proportion_interval
from ._integrators import default_integrator
from ._io import register_result
from ._noise import batch_factor
from ._observers import RunningMax
from ._problem import Problem

# Broadie, Glasserman & Kou (1997): monitoring a Brownian motion only every dt moves the
# effective barrier by β σ √dt, β = −ζ(1/2)/√(2π).
BGK_BETA = 0.5825971579390106


# ======================================================================================
# linear and mean-square stability
# ======================================================================================


def gd_max_lr(hessian) -> float:
    """Largest stable step of gradient descent at a minimum: ``2 / λmax(H)``.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> so.stability.gd_max_lr(jnp.diag(jnp.array([1.0, 4.0])))
        0.5
    """
    h = np.asarray(hessian, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"hessian must be a square (d, d) matrix, got shape {h.shape}.")
    lam = float(np.linalg.eigvalsh(0.5 * (h + h.T)).max())
    if lam <= 0:
        raise ValueError(f"λmax(hessian) = {lam:.3g} <= 0: GD is stable at every lr (no curvature to bound it).")
    return 2.0 / lam


def per_example_hessians(problem: Problem, theta) -> Float[Array, "n d d"]:
    """``∇²fᵢ(θ)`` for every example, ``(N, d, d)`` (small ``d`` only: ``N d²`` memory)."""
    problem._need_data("per_example_hessians")
    theta = problem.check_params(theta, "theta")
    d = theta.shape[0]
    if problem.n_examples * d * d > 5e7:
        raise ValueError(
            f"per_example_hessians would hold N·d² = {problem.n_examples * d * d:.3g} numbers; "
            "use a smaller problem, or the Monte Carlo estimate so.stability.divergence_boundary."
        )
    return _per_example_hessians(problem, theta)


@eqx.filter_jit
def _per_example_hessians(problem, theta):
    h = jax.vmap(jax.hessian(problem.example_loss), in_axes=(None, 0))(theta, problem.data)
    return 0.5 * (h + jnp.swapaxes(h, -1, -2))


class StabilityRegion(eqx.Module):
    """Largest mean-square stable ``lr`` per batch size (the ``(lr, B)`` stability region is
    ``lr ≤ max_lr[B]``), with the GD bound ``2/λmax`` it never exceeds."""

    batch_sizes: np.ndarray
    max_lr: np.ndarray
    gd_max_lr: float
    replacement: bool
    n_examples: int


class MeanSquareStability(eqx.Module):
    """SGD linearised at a minimum: the second-moment operator ``T`` and its stability.

    Built from the per-example Hessians ``Hᵢ`` at the minimum (exact for per-example
    quadratics, a linearisation otherwise). On ``vec(M)`` (row-major),

    ``T(lr, c) = I − lr (H ⊕ H) + lr² (H ⊗ H + c · C)``,  ``C = (1/N) Σᵢ Δᵢ ⊗ Δᵢ``,
    ``Δᵢ = Hᵢ − H``. ``T`` is symmetric and completely positive, so its spectral radius is
    its largest eigenvalue, and the stable set in ``lr`` is an interval ``[0, lr*]``.
    The algebra is small dense float64 linear algebra on the host (NumPy).

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
        >>> ms = so.stability.MeanSquareStability.from_problem(prob, prob.info["minima"][0])
        >>> ms.max_lr(1) < ms.max_lr(8) < ms.max_lr(16, replacement=False)
        True
        >>> abs(ms.max_lr(16, replacement=False) / ms.gd_max_lr - 1) < 1e-9  # B = N without replacement is GD
        True
    """

    hessian: np.ndarray
    deviation: np.ndarray
    n_examples: int = eqx.field(static=True)

    def __init__(self, hessians):
        hs = np.asarray(hessians, dtype=np.float64)
        if hs.ndim != 3 or hs.shape[1] != hs.shape[2]:
            raise ValueError(f"hessians must be per-example Hessians of shape (N, d, d), got {hs.shape}.")
        n, d, _ = hs.shape
        if d > 48:
            raise ValueError(
                f"d={d}: the operator is d²×d² = {d * d}×{d * d}; use d <= 48, or the Monte Carlo "
                "boundary so.stability.divergence_boundary for larger models."
            )
        if not np.all(np.isfinite(hs)):
            raise ValueError("hessians contain non-finite entries.")
        hs = 0.5 * (hs + np.swapaxes(hs, 1, 2))
        h = hs.mean(axis=0)
        dev = hs - h
        self.hessian = h
        self.deviation = np.einsum("nac,nbd->abcd", dev, dev).reshape(d * d, d * d) / n
        self.n_examples = int(n)

    @classmethod
    def from_problem(cls, problem: Problem, minimum) -> "MeanSquareStability":
        """From the per-example Hessians of ``problem`` at ``minimum``."""
        return cls(per_example_hessians(problem, minimum))

    @property
    def dim(self) -> int:
        return int(self.hessian.shape[0])

    @property
    def gd_max_lr(self) -> float:
        """``2 / λmax(H)``: the full-batch bound (``c = 0``)."""
        return gd_max_lr(self.hessian)

    def _c(self, batch_size, replacement) -> float:
        b = positive_int("batch_size", batch_size, upper=self.n_examples, upper_name="the number of examples")
        return batch_factor(self.n_examples, b, bool(replacement))

    def _parts(self):
        h = self.hessian
        eye = np.eye(self.dim)
        return np.kron(h, eye) + np.kron(eye, h), np.kron(h, h), self.deviation

    def operator(self, lr, batch_size, replacement: bool = True) -> np.ndarray:
        """``T`` as a ``d² × d²`` matrix acting on row-major ``vec(E[eeᵀ])``."""
        lr = float(positive("lr", lr))
        p, k, cdev = self._parts()
        c = self._c(batch_size, replacement)
        return np.eye(p.shape[0]) - lr * p + lr**2 * (k + c * cdev)

    def spectral_radius(self, lr, batch_size, replacement: bool = True) -> float:
        """``ρ(T)``: the per-step growth factor of ``E‖e‖²``; mean-square stable iff ``≤ 1``."""
        t = self.operator(lr, batch_size, replacement)
        return float(np.max(np.abs(np.linalg.eigvalsh(0.5 * (t + t.T)))))

    def max_lr(self, batch_size, replacement: bool = True, *, method: str = "exact", rtol: float = 1e-12) -> float:
        """The largest mean-square stable ``lr`` for this batch size.

        ``method="exact"``: ``ρ(T) ≤ 1 ⟺ lr·Q ≼ P`` with ``P = H ⊕ H`` and
        ``Q = H ⊗ H + c·C`` (``T`` is symmetric with its spectral radius as largest
        eigenvalue), so ``lr* = 1 / λmax(P^{-1/2} Q P^{-1/2})``; needs ``H ≻ 0``.
        ``method="bisection"``: bisection on ``ρ(T(lr)) ≤ 1`` over ``(0, 2/λmax]`` (any ``H``).
        """
        c = self._c(batch_size, replacement)
        if method == "exact":
            p, k, cdev = self._parts()
            lam_p, v = np.linalg.eigh(p)
            if lam_p.min() <= 1e-12 * np.abs(lam_p).max():
                return self.max_lr(batch_size, replacement, method="bisection", rtol=rtol)
            w = v / np.sqrt(lam_p)
            q = w.T @ (k + c * cdev) @ w
            mu = float(np.linalg.eigvalsh(0.5 * (q + q.T)).max())
            return math.inf if mu <= 0 else 1.0 / mu
        if method != "bisection":
            raise ValueError(f"method must be 'exact' or 'bisection', got {method!r}.")
        lo, hi = 0.0, self.gd_max_lr
        if self.spectral_radius(hi, batch_size, replacement) <= 1.0:
            return hi
        while hi - lo > rtol * hi:
            mid = 0.5 * (lo + hi)
            if self.spectral_radius(mid, batch_size, replacement) <= 1.0:
                lo = mid
            else:
                hi = mid
        return lo

    def region(self, batch_sizes=None, replacement: bool = True, *, method: str = "exact") -> StabilityRegion:
        """``max_lr`` for every batch size (default ``1 … N``): the ``(lr, B)`` stability region."""
        bs = np.arange(1, self.n_examples + 1) if batch_sizes is None else np.asarray(batch_sizes, dtype=int)
        lrs = np.array([self.max_lr(int(b), replacement, method=method) for b in bs])
        return StabilityRegion(
            batch_sizes=bs, max_lr=lrs, gd_max_lr=self.gd_max_lr,
            replacement=bool(replacement), n_examples=self.n_examples,
        )


# ======================================================================================
# Monte Carlo: growth of E‖e‖^q under the real optimizer's tangent map
# ======================================================================================


class GrowthRate(eqx.Module):
    """Per-step growth rate of ``E‖e_k‖^q`` for the tangent dynamics at a minimum.

    ``rate = lim (1/k) log E‖e_k‖^q``: for ``q = 2`` this is ``log ρ(T)`` and the
    minimum is mean-square stable iff ``rate ≤ 0``. ``stderr`` comes from batch means over
    the steps after ``burn_in``; ``log_weights`` holds ``log mean_i ‖A_k uᵢ‖^q`` per step.
    """

    rate: float
    stderr: float
    moment: float
    log_weights: Float[Array, " K"]


def _systematic_resample(key, w):
    n = w.shape[0]
    cdf = jnp.cumsum(w / jnp.sum(w))
    u = (jnp.arange(n, dtype=w.dtype) + jr.uniform(key, dtype=w.dtype)) / n
    return jnp.clip(jnp.searchsorted(cdf, u), 0, n - 1)


@eqx.filter_jit
def _growth_kernel(dyn, integrator, minimum, u0, keys, resample_key, dt, n_steps: int, moment):
    """The tangent map of the engine's step at ``minimum`` (the integrator's batched step
    with the engine's keys, walker ``i`` at step ``j`` from ``fold_in(keys[i], j)``), with
    systematic resampling of the walkers after every step."""
    n = u0.shape[0]

    def tangent(u, key, j):  # one walker: the primal stays at the (shared) minimum
        step = lambda th: integrator.step(dyn, th[None], j * dt, dt, key[None], j)[0]
        return jax.jvp(step, (minimum,), (u,))[1]

    def body(j, carry):
        u, logs = carry
        v = jax.vmap(tangent, (0, 0, None))(u, keys, j)
        sq = jnp.sum(v**2, axis=-1)
        w = sq ** (0.5 * moment)
        logs = logs.at[j].set(jnp.log(jnp.mean(w)))
        idx = _systematic_resample(jr.fold_in(resample_key, j), w)
        v, sq = v[idx], sq[idx]
        u = v / jnp.sqrt(sq)[:, None]
        return u, logs

    _, logs = jax.lax.fori_loop(0, n_steps, body, (u0, jnp.zeros(n_steps, u0.dtype)))
    return logs


def _batch_means_se(x, n_batches: int = 20):
    x = np.asarray(x, dtype=np.float64)
    nb = max(2, min(n_batches, len(x) // 5))
    m = len(x) // nb
    if m < 1:
        return float(np.std(x, ddof=1) / np.sqrt(len(x)))
    bm = x[: nb * m].reshape(nb, m).mean(axis=1)
    return float(np.std(bm, ddof=1) / np.sqrt(nb))


def moment_growth_rate(
    dyn: AbstractDynamics,
    minimum,
    *,
    key: PRNGKeyArray,
    n_walkers: int = 2000,
    n_steps: int = 400,
    burn_in: int = 100,
    moment: float = 2.0,
) -> GrowthRate:
    """Growth rate of ``E‖e_k‖^q`` for the real optimizer linearised at ``minimum``.

    Each walker holds a unit tangent ``u``; a step applies the optimizer's own step
    linearised at the minimum, ``v = ∂step(θ*) u`` (``jax.jvp``; its batch is drawn by the
    optimizer with the engine's keys, walker ``i`` at step ``j`` from
    ``fold_in(fold_in(key, i), j)``), weights it by ``w = ‖v‖^q``, and resamples the walkers
    in proportion to ``w`` (systematic resampling). Then ``log mean(w)`` per step averages
    to the growth rate. Averaging ``‖e_k‖²`` over independent paths instead is dominated by
    rare paths and underestimates the growth badly near the boundary (heavy tails).

    Args:
        dyn: a dynamics whose state is ``θ`` (``SGD``, ``GD``, ``NoisyGD``, ``SGDSDE``).
        minimum: the point to linearise at, ``(d,)``.
        n_walkers, n_steps, burn_in: population size, steps, steps discarded at the start.
        moment: ``q > 0``; ``q = 2`` is mean-square stability.
    """
    if not isinstance(dyn, AbstractDynamics):
        raise ValueError(f"dyn must be a dynamics such as so.SGD(...), got {type(dyn).__name__}.")
    n_walkers = positive_int("n_walkers", n_walkers)
    n_steps = positive_int("n_steps", n_steps)
    if not 0 <= burn_in < n_steps:
        raise ValueError(f"burn_in must be in [0, n_steps={n_steps}), got {burn_in}.")
    q = float(positive("moment", moment))
    minimum = dyn.problem.check_params(minimum, "minimum")
    state_is_theta(dyn, minimum)
    dt = resolve_dt(dyn, None).astype(minimum.dtype)
    k_dir, k_path, k_res = jr.split(key, 3)
    u0 = jr.normal(k_dir, (n_walkers, minimum.shape[0]), minimum.dtype)
    u0 = u0 / jnp.linalg.norm(u0, axis=-1, keepdims=True)
    logs = _growth_kernel(dyn, default_integrator(dyn), minimum, u0, path_keys(k_path, 0, n_walkers), k_res, dt, n_steps,
                          jnp.asarray(q, minimum.dtype))
    tail = np.asarray(logs[burn_in:], dtype=np.float64)
    if not np.all(np.isfinite(tail)):
        raise ValueError("the tangent dynamics became non-finite; lower lr or check the minimum.")
    return GrowthRate(rate=float(tail.mean()), stderr=_batch_means_se(tail), moment=q, log_weights=logs)


class DivergenceBoundary(eqx.Module):
    """The ``lr`` at which ``E‖e‖^q`` of the real optimizer starts to grow, from Monte Carlo.

    ``lr`` with the interval ``[low, high]`` (the growth rate's standard error mapped
    through its slope in ``lr``); ``lrs``/``rates``/``stderrs`` are every evaluation made
    (bisection with common random numbers, then two points for the slope).
    """

    lr: float
    low: float
    high: float
    slope: float
    lrs: Float[Array, " m"]
    rates: Float[Array, " m"]
    stderrs: Float[Array, " m"]
    moment: float
    confidence: float


def divergence_boundary(
    dyn: AbstractDynamics,
    minimum,
    *,
    key: PRNGKeyArray,
    lr_bracket=None,
    n_walkers: int = 2000,
    n_steps: int = 400,
    burn_in: int = 100,
    moment: float = 2.0,
    n_bisect: int = 16,
    confidence: float = 0.95,
) -> DivergenceBoundary:
    """Monte Carlo divergence boundary of a real optimizer at a minimum: the ``lr`` where the
    growth rate of ``E‖e_k‖^q`` (:func:`moment_growth_rate`) crosses zero.

    The ``lr`` of ``dyn`` is varied (``eqx.tree_at``) with the same key at every ``lr``
    (common random numbers: the same batches), so the estimated rate is a smooth function
    of ``lr`` and bisection is stable. ``lr_bracket`` defaults to ``(0, 2/λmax(H))``, the GD
    bound, widened if the rate there is still negative. Works for losses that are not
    quadratic (the tangent map is the optimizer's own step, linearised at the minimum).

    Examples:
        >>> import jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
        >>> th = prob.info["minima"][0]
        >>> mc = so.stability.divergence_boundary(so.SGD(prob, 0.1, 1), th, key=jr.key(1), n_walkers=500, n_steps=200)
        >>> abs(mc.lr / so.stability.MeanSquareStability.from_problem(prob, th).max_lr(1) - 1) < 0.05
        True
    """
    if not hasattr(dyn, "lr"):
        raise ValueError(f"{type(dyn).__name__} has no lr to vary.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    minimum = dyn.problem.check_params(minimum, "minimum")
    dtype = minimum.dtype

    def rate_at(lr) -> GrowthRate:
        d2 = eqx.tree_at(lambda d: d.lr, dyn, jnp.asarray(lr, dtype))
        return moment_growth_rate(d2, minimum, key=key, n_walkers=n_walkers, n_steps=n_steps, burn_in=burn_in,
                                  moment=moment)

    if lr_bracket is None:
        h = dyn.problem.hessian(minimum)
        lo, hi = 0.0, gd_max_lr(h)
    else:
        lo, hi = (float(v) for v in lr_bracket)
        if not 0.0 <= lo < hi:
            raise ValueError(f"lr_bracket must be (lo, hi) with 0 <= lo < hi, got {lr_bracket}.")
    evals = []

    def ev(lr):
        g = rate_at(lr)
        evals.append((lr, g.rate, g.stderr))
        return g

    g_hi = ev(hi)
    for _ in range(6):
        if g_hi.rate > 0:
            break
        lo, hi = hi, 2 * hi
        g_hi = ev(hi)
    else:
        raise ValueError(f"the growth rate is still negative at lr={hi:.4g}; pass a wider lr_bracket.")
    if lo > 0:
        g_lo = ev(lo)
        if g_lo.rate > 0:
            raise ValueError(f"the growth rate is already positive at lr={lo:.4g}; pass a lower lr_bracket.")
        r_lo = g_lo.rate
    else:
        r_lo = 0.0  # lr → 0: the tangent map tends to the identity
    r_hi = g_hi.rate
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        g = ev(mid)
        if g.rate > 0:
            hi, r_hi = mid, g.rate
        else:
            lo, r_lo = mid, g.rate
    lr_star = lo + (hi - lo) * (-r_lo) / (r_hi - r_lo) if r_hi != r_lo else 0.5 * (lo + hi)
    h = 0.02 * lr_star
    g_a, g_b = ev(lr_star - h), ev(lr_star + h)
    slope = (g_b.rate - g_a.rate) / (2 * h)
    se_rate = max(g_a.stderr, g_b.stderr)
    if slope <= 0:
        raise ValueError("the growth rate does not increase with lr around the boundary; use more walkers/steps.")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    half = z * se_rate / slope
    lrs, rates, ses = (np.array(v) for v in zip(*evals))
    return DivergenceBoundary(
        lr=float(lr_star), low=float(lr_star - half), high=float(lr_star + half), slope=float(slope),
        lrs=jnp.asarray(lrs), rates=jnp.asarray(rates), stderrs=jnp.asarray(ses), moment=float(moment),
        confidence=float(confidence),
    )


# ======================================================================================
# order statistics
# ======================================================================================


def quantile_ranks(n: int, p: float, confidence: float = 0.95) -> tuple[int, int, int]:
    """1-based ranks ``(k, r, s)``: the point estimate ``X_(k)``, ``k = ⌈n p⌉``, and the
    distribution-free interval ``[X_(r), X_(s)]`` for the ``p``-quantile of a continuous
    law, ``P(X_(r) ≤ q_p ≤ X_(s)) = P(r ≤ Bin(n, p) ≤ s − 1) ≥ confidence``
    (equal tails; ``r = 0`` means ``−∞`` and ``s = n + 1`` means ``+∞``)."""
    alpha = 1.0 - confidence
    k = min(max(int(math.ceil(n * p - 1e-9)), 1), n)
    r = int(stats.binom.ppf(alpha / 2, n, p))
    if stats.binom.cdf(r - 1, n, p) > alpha / 2:  # guard the ppf convention
        r -= 1
    s = int(stats.binom.ppf(1 - alpha / 2, n, p)) + 1
    return k, max(r, 0), min(s, n + 1)


def quantile_coverage(n: int, p: float, confidence: float = 0.95) -> float:
    """Exact coverage of :func:`quantile_ranks`' interval for a continuous law (≥ confidence)."""
    _, r, s = quantile_ranks(n, p, confidence)
    return float(stats.binom.cdf(s - 1, n, p) - stats.binom.cdf(r - 1, n, p))


def quantile_interval(samples, p: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of the ``p``-quantile from order statistics (see
    :func:`quantile_ranks`). ``+inf`` samples (diverged paths) are allowed."""
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("no samples.")
    k, r, s = quantile_ranks(n, level("p", p), level("confidence", confidence))
    low = -np.inf if r == 0 else x[r - 1]
    high = np.inf if s == n + 1 else x[s - 1]
    return float(x[k - 1]), float(low), float(high)


# ======================================================================================
# the stochastic stability radius
# ======================================================================================


def max_excursion(
    dyn: AbstractDynamics,
    minimum,
    *,
    key: PRNGKeyArray,
    n_paths: int,
    n_steps: int,
    dt=None,
    save_every: int | None = None,
    norm: Callable | None = None,
    y0=None,
    chunk_size: int | None = None,
    checkpoint=None,
    progress=None,
) -> tuple[Float[Array, " S"], Float[Array, "n S"]]:
    """Running maximum of ``‖θ_t − θ*‖`` per path, without storing paths (the engine run
    with the :class:`sde_opt.RunningMax` observer).

    Paths are the ones :func:`sde_opt.simulate` draws with the same ``key`` (path ``i``
    from ``fold_in(key, i)``, step ``j`` from ``fold_in(fold_in(key, i), j)``).
    ``checkpoint`` and ``progress`` as in :func:`sde_opt.simulate`.

    Returns:
        ``ts (S,)`` and ``running_max (n_paths, S)``: the maximum over steps ``1 … k`` at
        the saved steps ``k = save_every, 2·save_every, …`` (``S = n_steps // save_every``;
        default one column at the horizon). A path that became non-finite has ``+inf``.
    """
    if not isinstance(dyn, AbstractDynamics):
        raise ValueError(f"dyn must be a dynamics such as so.SGDSDE(...), got {type(dyn).__name__}.")
    key = check_key(key)
    n_paths = positive_int("n_paths", n_paths)
    n_steps = positive_int("n_steps", n_steps)
    save_every = n_steps if save_every is None else positive_int("save_every", save_every, upper=n_steps,
                                                                  upper_name="n_steps")
    dt = resolve_dt(dyn, dt)
    center = dyn.problem.check_params(minimum, "minimum")
    y0 = check_start(dyn, center if y0 is None else y0, n_paths)
    center = center.astype(y0.dtype)
    n_saves = n_steps // save_every
    observer = RunningMax(center, every=save_every) if norm is None else RunningMax(center, every=save_every, norm=norm)
    runs, _ = run_observers(dyn, y0, observer, key=key, n_steps=n_saves * save_every, dt=dt, chunk_size=chunk_size,
                            checkpoint=checkpoint, progress=progress)
    ts = jnp.arange(1, n_saves + 1, dtype=y0.dtype) * (save_every * dt.astype(y0.dtype))
    return ts, runs


class RadiusCurve(eqx.Module):
    """``r(δ)`` on a grid of ``δ`` with intervals (pointwise, or a simultaneous DKW band)."""

    delta: Float[Array, " m"]
    radius: Float[Array, " m"]
    low: Float[Array, " m"]
    high: Float[Array, " m"]


class StabilityRadius(eqx.Module):
    """The stochastic stability radius of a minimum.

    ``radius`` is the ``(1 − δ)``-quantile of the maximal excursion
    ``sup_{t ≤ T} ‖θ_t − θ*‖`` over paths started at the minimum: the smallest ``r`` such
    that a path stays inside the ball of radius ``r`` up to the horizon ``T`` with
    probability at least ``1 − δ``. ``[low, high]`` is the distribution-free
    order-statistics interval at level ``confidence``.

    Attributes:
        radius, low, high: the estimate and its interval at ``delta``.
        delta, confidence: the levels asked for.
        ts: ``(S,)`` horizons at which the running maximum was recorded (the last is ``T``).
        running_max: ``(n_paths, S)`` running maximum per path (``+inf``: diverged).
    """

    radius: float
    low: float
    high: float
    delta: float
    confidence: float
    ts: Float[Array, " S"]
    running_max: Float[Array, "n S"]

    @property
    def max_excursion(self) -> Float[Array, " n"]:
        """``sup_{t ≤ T} ‖θ_t − θ*‖`` per path."""
        return self.running_max[:, -1]

    @property
    def n_paths(self) -> int:
        return int(self.running_max.shape[0])

    @property
    def n_diverged(self) -> int:
        return int(np.sum(~np.isfinite(np.asarray(self.max_excursion))))

    def curve(self, deltas=None, *, confidence: float | None = None, simultaneous: bool = False,
              time_index: int = -1) -> RadiusCurve:
        """``r(δ)`` for many ``δ`` from the same paths (default: 60 values, log-spaced from
        ``~5/n`` to 0.5). ``simultaneous=True`` gives a band that holds for all ``δ`` at
        once (Dvoretzky–Kiefer–Wolfowitz, Massart's constant); ``time_index`` picks a
        shorter horizon ``ts[time_index]``."""
        conf = self.confidence if confidence is None else level("confidence", confidence)
        x = np.sort(np.asarray(self.running_max[:, time_index], dtype=np.float64))
        n = x.size
        if deltas is None:
            deltas = np.geomspace(min(0.5, max(5.0 / n, 1e-4)), 0.5, 60)
        deltas = np.atleast_1d(np.asarray(deltas, dtype=np.float64))
        est, lo, hi = (np.empty(deltas.shape) for _ in range(3))
        eps = math.sqrt(math.log(2.0 / (1.0 - conf)) / (2.0 * n))
        for i, d in enumerate(deltas):
            p = 1.0 - level("delta", d)
            if simultaneous:
                est[i] = x[min(max(math.ceil(n * p - 1e-9), 1), n) - 1]
                rl, rh = math.ceil(n * (p - eps) - 1e-9), math.ceil(n * (p + eps) - 1e-9)
                lo[i] = -np.inf if rl < 1 else x[rl - 1]
                hi[i] = np.inf if rh > n else x[rh - 1]
            else:
                est[i], lo[i], hi[i] = quantile_interval(x, p, conf)
        return RadiusCurve(delta=jnp.asarray(deltas), radius=jnp.asarray(est), low=jnp.asarray(lo),
                           high=jnp.asarray(hi))

    def inside_probability(self, radius, *, confidence: float | None = None, time_index: int = -1):
        """``P(sup ‖θ_t − θ*‖ < r)`` with a Clopper–Pearson interval: ``(p, low, high)``."""
        conf = self.confidence if confidence is None else level("confidence", confidence)
        x = np.asarray(self.running_max[:, time_index], dtype=np.float64)
        k, n = int(np.sum(x < float(radius))), x.size
        return (k / n, *proportion_interval(k, n, conf, method="exact"))

    def __repr__(self):
        return (f"StabilityRadius(radius={self.radius:.4g} [{self.low:.4g}, {self.high:.4g}], delta={self.delta}, "
                f"T={float(self.ts[-1]):.4g}, n_paths={self.n_paths}, n_diverged={self.n_diverged})")


def stability_radius(
    dyn: AbstractDynamics,
    minimum,
    *,
    key: PRNGKeyArray,
    delta,
    n_steps: int,
    n_paths: int,
    dt=None,
    confidence: float = 0.95,
    save_every: int | None = None,
    norm: Callable | None = None,
    chunk_size: int | None = None,
    checkpoint=None,
    progress=None,
) -> StabilityRadius:
    """The stochastic stability radius ``r(δ)`` of ``minimum`` under ``dyn`` over the
    horizon ``T = n_steps · dt``.

    ``n_paths`` paths start at the minimum; a jitted kernel tracks each path's running
    maximum of ``‖θ_t − θ*‖`` on the step grid (no paths are stored), and ``r(δ)`` is the
    ``(1 − δ)``-quantile of the maxima with the distribution-free order-statistics
    interval (:func:`quantile_interval`). ``result.curve()`` gives ``r(δ)`` for every ``δ``
    from the same simulation. Diverged paths count as maxima ``+inf`` (they left every
    ball), never dropped.

    Works for every engine dynamics: the SDE (``SGDSDE``, any ``dt``), ``NoisyGD`` and
    real ``SGD``; paths are those of :func:`sde_opt.simulate` with the same key.

    A path is only looked at on the grid, so the continuous-time maximum of an SDE is
    slightly larger: for Brownian motion the grid maximum is low by about
    ``0.5826 σ √dt`` (Broadie, Glasserman & Kou 1997; :func:`brownian_max_cdf`).

    Args:
        dyn: the dynamics.
        minimum: ``θ*``, ``(d,)``; paths start here.
        key: PRNG key; path ``i`` uses ``fold_in(key, i)``.
        delta: the escape probability ``δ ∈ (0, 1)``.
        n_steps, n_paths: horizon in steps and number of paths.
        dt: step (default: the dynamics' own, ``lr``).
        confidence: level of the interval.
        save_every: also record the running maximum every ``save_every`` steps (for
            ``r(δ)`` at shorter horizons, ``result.ts``).
        norm: ``e ↦ ‖e‖`` on ``(d,)`` vectors (default Euclidean; e.g.
            ``lambda e: e[0]`` for a one-sided maximum).
        checkpoint, progress: as in :func:`sde_opt.simulate` (resumable run, progress bar).

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.eye(2))
        >>> dyn = so.SGDSDE(prob, lr=0.1, batch_size=1, noise=so.HessianNoise())
        >>> rad = so.stability_radius(dyn, jnp.zeros(2), key=jr.key(0), delta=0.1, n_steps=100, n_paths=400)
        >>> bool(rad.low <= rad.radius <= rad.high)
        True
    """
    delta = level("delta", delta)
    confidence = level("confidence", confidence)
    ts, runs = max_excursion(dyn, minimum, key=key, n_paths=n_paths, n_steps=n_steps, dt=dt, save_every=save_every,
                             norm=norm, chunk_size=chunk_size, checkpoint=checkpoint, progress=progress)
    est, lo, hi = quantile_interval(np.asarray(runs[:, -1]), 1.0 - delta, confidence)
    return StabilityRadius(radius=est, low=lo, high=hi, delta=delta, confidence=confidence, ts=ts, running_max=runs)


# ======================================================================================
# Brownian motion: the law of its running maximum (ground truth for tests)
# ======================================================================================


def brownian_max_cdf(r, t, *, sigma=1.0, two_sided: bool = True, dt=None):
    """``P(sup_{s ≤ t} |σW_s| < r)`` (``two_sided``) or ``P(max_{s ≤ t} σW_s < r)``.

    Two-sided: the eigenfunction series ``(4/π) Σ_k (−1)^k/(2k+1) exp(−(2k+1)²π² t/(8r²))``
    for ``t/r² > 1/2`` and the image (reflection) series
    ``Σ_k (−1)^k [Φ((2k+1)r/√t) − Φ((2k−1)r/√t)]`` otherwise (Feller, vol. II, X.5).
    One-sided: ``2Φ(r/√t) − 1`` (reflection principle). With ``dt``, the law of the
    maximum over the grid ``dt, 2dt, …``: the barrier is shifted out by ``0.5826 σ √dt``
    (Broadie, Glasserman & Kou 1997).
    """
    r = np.asarray(r, dtype=np.float64)
    sigma = float(sigma)
    if dt is not None:
        r = r + BGK_BETA * sigma * math.sqrt(float(dt))
    shape = r.shape
    x = np.atleast_1d(r / (sigma * math.sqrt(float(t)))).ravel()  # barrier in units of σ√t
    if not two_sided:
        return np.where(x > 0, 2.0 * stats.norm.cdf(x) - 1.0, 0.0).reshape(shape)
    pos = x > 0
    xp = np.where(pos, x, 1.0)
    u = 1.0 / xp**2  # t / r²
    k = np.arange(0, 60)[:, None]
    eig = (4 / np.pi) * np.sum((-1.0) ** k / (2 * k + 1) * np.exp(-((2 * k + 1) ** 2) * np.pi**2 * u / 8), axis=0)
    kk = np.arange(-30, 31)[:, None]
    img = np.sum((-1.0) ** np.abs(kk) * (stats.norm.cdf((2 * kk + 1) * xp) - stats.norm.cdf((2 * kk - 1) * xp)), axis=0)
    out = np.where(pos, np.where(u > 0.5, eig, img), 0.0)
    return np.clip(out, 0.0, 1.0).reshape(shape)


def brownian_max_quantile(p, t, *, sigma=1.0, two_sided: bool = True, dt=None) -> float:
    """The ``p``-quantile of the (grid, with ``dt``) maximum of ``|σW|`` (or ``σW``) on ``[0, t]``."""
    p = level("p", p)
    f = lambda r: float(brownian_max_cdf(r, t, sigma=sigma, two_sided=two_sided)) - p
    hi = sigma * math.sqrt(t)
    while f(hi) < 0:
        hi *= 2
    q = optimize.brentq(f, 1e-12 * hi, hi, xtol=1e-14, rtol=1e-13)
    if dt is not None:
        q -= BGK_BETA * sigma * math.sqrt(float(dt))
    return float(q)


def brownian_max_pdf(r, t, *, sigma=1.0, two_sided: bool = True, dt=None, h: float = 1e-5):
    """Density of the maximum (central difference of :func:`brownian_max_cdf`)."""
    r = np.asarray(r, dtype=np.float64)
    kw = dict(sigma=sigma, two_sided=two_sided, dt=dt)
    return (brownian_max_cdf(r + h, t, **kw) - brownian_max_cdf(r - h, t, **kw)) / (2 * h)


register_result(StabilityRadius)
register_result(DivergenceBoundary)
register_result(StabilityRegion)
register_result(GrowthRate)
register_result(RadiusCurve)
