"""The edge of stability: full-batch GD drives its sharpness up to ``2/lr`` and hovers there
(Cohen, Kaur, Li, Kolter & Talwalkar 2021), where the gradient flow stops describing it;
mini-batch SGD settles below ``2/lr``.

* :func:`train_with_sharpness` runs any engine dynamics (``GD``, ``SGD``) from one start and
  records ``λmax(∇²L)`` every ``every`` steps inside one jitted ``lax.scan`` (warm-started
  Lanczos on Hessian-vector products).
* :func:`gradient_flow_path` solves ``dθ/dt = −∇L`` with diffrax (Tsit5, adaptive) from the
  same start, on the GD time grid ``t = k · lr``.
* :func:`departure_step` finds the first record where GD has left the flow.
* :func:`edge_of_stability` puts these together for several learning rates and batch sizes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_key, positive_int
from ._curvature import CurvatureOperator, Hessian, _default_tol, _eigs_kernel
from ._diffrax import flow_path
from ._dynamics import GD, SGD, AbstractDynamics, GradientFlow
from ._io import register_result
from ._problem import Problem
from ._train_loop import AbstractMeasurement, measure_along, train_and_measure


def lambda_max(problem: Problem, theta, *, key: PRNGKeyArray | None = None, v0=None, n_iter: int = 30):
    """``λmax(∇²L(θ))`` and its unit eigenvector by the fixed-step mode of the package's
    Lanczos (:func:`sde_opt.curvature.eigs` with ``fixed_steps=True``: exactly ``n_iter`` steps with
    full reorthogonalisation on HVPs, no convergence test, so the compiled graph is small
    enough to sit inside a training scan). Starts from ``v0`` as given (a warm start, e.g.
    the previous eigenvector), else from a normal vector drawn with ``key``. Jittable;
    warm-started, 20–40 steps give λmax to float32 precision. For the top-k with a
    convergence test use :func:`sde_opt.hessian_eigs`.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 3.0])))
        >>> lam, v = so.curvature.lambda_max(prob, jnp.zeros(2), key=jr.key(0))
        >>> round(float(lam), 4)
        3.0
    """
    key = None if key is None else check_key(key)
    theta = jnp.asarray(theta)
    if v0 is None:
        if key is None:
            raise ValueError("pass key= (random start) or v0= (warm start).")
        v0 = jr.normal(key, theta.shape, theta.dtype)
    v0 = jnp.asarray(v0, theta.dtype)
    v = v0 / jnp.maximum(jnp.linalg.norm(v0), jnp.finfo(theta.dtype).tiny ** 0.5)
    k_lanczos, k_ritz = jr.split(jr.key(0) if key is None else key)  # restart directions only
    n_iter = min(positive_int("n_iter", n_iter), theta.shape[0])
    op = CurvatureOperator(problem=problem, theta=theta, curvature=Hessian(), start=0, size=theta.shape[0])
    res = _eigs_kernel(op.linear(), v, k_lanczos, k_ritz, 1, "largest", n_iter, _default_tol(theta.dtype), True)
    return res.values[0], res.vectors[0]


class SharpnessHistory(eqx.Module):
    """A training run with its sharpness recorded (``R = n_steps // every + 1`` records, the
    first at the start).

    Attributes:
        steps: ``(R,)`` steps taken before each record.
        sharpness: ``(R,)`` ``λmax(∇²L(θ))`` (full-batch Hessian).
        loss: ``(R,)`` full-batch loss.
        params: ``(R, d)`` the parameters at each record (empty ``(R, 0)`` unless kept).
        lr: the learning rate; ``2/lr`` is the GD stability threshold.
        batch_size: ``0`` for full batch.
    """

    steps: Int[Array, " R"]
    sharpness: Float[Array, " R"]
    loss: Float[Array, " R"]
    params: Float[Array, "R d"]
    lr: float
    batch_size: int

    @property
    def threshold(self) -> float:
        return 2.0 / self.lr

    def ratio(self) -> np.ndarray:
        """``sharpness / (2/lr)`` per record."""
        return np.asarray(self.sharpness) * self.lr / 2.0

    def summary(self, *, tol: float = 0.1, window: float = 0.5) -> SharpnessSummary:
        """Over the last ``window`` of the records: the median, min and max of
        ``sharpness/(2/lr)``, the fraction of records within ``±tol`` of ``2/lr``, and the
        first step at which the sharpness came within ``tol`` of ``2/lr``."""
        r = self.ratio()
        last = r[int(len(r) * (1 - window)):]
        near = np.nonzero(np.abs(r - 1) <= tol)[0]
        return SharpnessSummary(
            lr=self.lr, batch_size=self.batch_size, median_ratio=float(np.median(last)), min_ratio=float(last.min()),
            max_ratio=float(last.max()), frac_within_tol=float(np.mean(np.abs(last - 1) <= tol)),
            first_step_near=int(np.asarray(self.steps)[near[0]]) if near.size else -1,
        )


class SharpnessSummary(eqx.Module):
    """:meth:`SharpnessHistory.summary`: ``sharpness/(2/lr)`` over the last part of a run
    (median, min, max, fraction within the tolerance of 1) and the first step within it (-1: never)."""

    lr: float
    batch_size: int
    median_ratio: float
    min_ratio: float
    max_ratio: float
    frac_within_tol: float
    first_step_near: int


class _Sharpness(AbstractMeasurement):
    """λmax by :func:`lambda_max` (``max_iter`` steps), warm-started from the previous
    record's eigenvector plus a little noise (so that new directions stay reachable), and the
    full-batch loss; the parameters too with ``keep_params``."""

    max_iter: int = eqx.field(static=True)
    keep_params: bool = eqx.field(static=True, default=False)

    def init(self, theta0, key):
        return jr.normal(key, theta0.shape, theta0.dtype)

    def __call__(self, problem, theta, key, v):
        v0 = v + 1e-3 * jr.normal(key, v.shape, v.dtype)
        lam, v = lambda_max(problem, theta, key=key, v0=v0, n_iter=self.max_iter)
        params = theta if self.keep_params else jnp.zeros((0,), theta.dtype)
        return {"sharpness": lam, "loss": problem.loss(theta), "params": params}, v


def train_with_sharpness(
    dyn: AbstractDynamics,
    y0,
    *,
    key: PRNGKeyArray,
    n_steps: int,
    every: int,
    keep_params: bool = False,
    max_iter: int = 30,
) -> SharpnessHistory:
    """Run one path of ``dyn`` (``so.GD``, ``so.SGD``, ...) from ``theta0`` for ``n_steps``
    steps and record ``λmax(∇²L)`` every ``every`` steps, all in one jitted ``lax.scan``.

    λmax comes from a fixed number of Lanczos steps on HVPs (:func:`lambda_max`),
    warm-started from the previous record's top eigenvector, so each record costs
    ``max_iter`` HVPs. The path
    is path 0 of :func:`sde_opt.simulate` with the same key (same batches).

    Args:
        keep_params: also keep the parameters at every record (``(R, d)``), e.g. to compare
            with the gradient flow.
        max_iter: most Lanczos steps per record.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 3.0])))
        >>> hist = so.stability.train_with_sharpness(so.GD(prob, 0.1), jnp.ones(2), key=jr.key(0), n_steps=20, every=10)
        >>> [round(float(s), 4) for s in hist.sharpness]
        [3.0, 3.0, 3.0]
    """
    if not isinstance(dyn, AbstractDynamics):
        raise ValueError(f"dyn must be a dynamics such as so.GD(...), got {type(dyn).__name__}.")
    n_steps = positive_int("n_steps", n_steps)
    every = positive_int("every", every, upper=n_steps, upper_name="n_steps")
    y0 = dyn.problem.check_params(y0, "y0")
    lr = dyn.natural_dt()
    if lr is None:
        raise ValueError(f"{type(dyn).__name__} has no step size; use a discrete optimizer such as so.GD.")
    n_records = n_steps // every + 1
    max_iter = min(positive_int("max_iter", max_iter), y0.shape[0])
    _, rows = train_and_measure(dyn, y0, key, _Sharpness(max_iter, bool(keep_params)), n_records, every)
    b = getattr(dyn, "batch_size", None)
    full = b is None or (dyn.problem.n_examples is not None and isinstance(dyn, GD))
    return SharpnessHistory(
        steps=jnp.arange(n_records) * every, sharpness=rows["sharpness"], loss=rows["loss"],
        params=rows["params"],
        lr=float(lr), batch_size=0 if full else int(b),
    )


class FlowPath(eqx.Module):
    """The gradient flow on a time grid: ``ts (R,)``, ``params (R, d)``, ``loss (R,)``;
    ``reached`` is false from the first time the adaptive solver did not reach (step budget)."""

    ts: Float[Array, " R"]
    params: Float[Array, "R d"]
    loss: Float[Array, " R"]
    reached: Array
    n_solver_steps: Int[Array, ""]


def gradient_flow_path(problem: Problem, y0, ts, *, rtol=1e-6, atol=1e-8, max_steps: int = 200_000) -> FlowPath:
    """The gradient flow ``dθ/dt = −∇L(θ)`` from ``theta0``, saved at ``ts``: the package's
    one gradient-flow reference (every study that compares with the flow calls it). Solved
    by diffrax (Tsit5 with a PID controller at ``rtol``/``atol``). The flow sharpens as it
    goes, so an explicit solver needs ever smaller steps; if ``max_steps`` runs out, the
    remaining times are marked ``reached = False`` (and their parameters are ``nan``).

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.eye(1))
        >>> fp = so.stability.gradient_flow_path(prob, jnp.ones(1), jnp.array([0.0, 1.0]))
        >>> round(float(fp.params[1, 0]), 5)  # e^{-1}
        0.36788
    """
    y0 = problem.check_params(y0, "y0")
    ys, reached, n = flow_path(GradientFlow(problem), y0, ts, rtol=rtol, atol=atol, max_steps=max_steps)
    loss = jax.vmap(lambda y: jnp.where(jnp.all(jnp.isfinite(y)), problem.loss(jnp.nan_to_num(y)), jnp.nan))(ys)
    return FlowPath(ts=jnp.asarray(ts, y0.dtype), params=ys, loss=loss, reached=reached, n_solver_steps=n)


def departure_step(hist: SharpnessHistory, flow: FlowPath, *, tol: float = 0.05) -> tuple[int, np.ndarray]:
    """The first record where GD is farther than ``tol`` (relative) from the flow:
    ``‖θ_k − φ(k·lr)‖ > tol · ‖φ(k·lr) − θ_0‖``. Returns ``(step or -1, relative distances)``."""
    gd = np.asarray(hist.params, dtype=np.float64)
    fl = np.asarray(flow.params, dtype=np.float64)
    if gd.shape != fl.shape or gd.shape[1] == 0:
        raise ValueError("need the GD parameters at every record (keep_params=True) on the flow's time grid.")
    dist = np.linalg.norm(gd - fl, axis=1)
    travelled = np.linalg.norm(fl - fl[0], axis=1)
    rel = dist / np.maximum(travelled, 1e-12)
    rel[0] = 0.0
    bad = np.nonzero((rel > tol) | ~np.asarray(flow.reached))[0]
    return (int(np.asarray(hist.steps)[bad[0]]) if bad.size else -1), rel


def sharpness_along(problem: Problem, params, *, key: PRNGKeyArray, max_iter: int = 30) -> np.ndarray:
    """``λmax`` at each row of ``params`` (``nan`` rows stay ``nan``), one warm-started scan."""
    key = check_key(key)
    rows = measure_along(problem, jnp.asarray(params), key, _Sharpness(positive_int("max_iter", max_iter)))
    return np.asarray(rows["sharpness"])


class FlowComparison(eqx.Module):
    """GD against the gradient flow from the same start, on GD's record grid ``t = k · lr``.

    Attributes:
        loss, sharpness: ``(R,)`` the flow's loss and λmax (``nan`` where not ``reached``).
        rel_dist: ``(R,)`` GD's distance from the flow relative to the flow's travel.
        reached: ``(R,)`` false from the first time the adaptive solver did not reach.
        departure: the first step at which GD left the flow (:func:`departure_step`; -1: never).
        sharpness_departure: the first step at which the sharpnesses differ by more than
            the tolerance (-1: never).
    """

    loss: np.ndarray
    sharpness: np.ndarray
    rel_dist: np.ndarray
    reached: np.ndarray
    departure: int
    sharpness_departure: int


class EdgeOfStability(eqx.Module):
    """The edge-of-stability study (:func:`edge_of_stability`).

    Attributes:
        lrs: ``(n,)`` GD's learning rates; gd: one :class:`SharpnessHistory` per ``lr``
            (without parameters); flow: one :class:`FlowComparison` per ``lr`` (empty
            without ``flow=True``).
        sgd_lr, batch_sizes: SGD's learning rate and batch sizes; sgd: one history per ``B``.
        gd_median_ratio, gd_frac_within, gd_first_near: ``(n,)`` over the last half of each
            GD run, the median of ``sharpness/(2/lr)``, the fraction within 10% of 1, and the
            first step within 10% (-1: never); sgd_median_ratio: ``(len(batch_sizes),)``.
    """

    lrs: np.ndarray
    gd: tuple[SharpnessHistory, ...]
    flow: tuple[FlowComparison, ...]
    sgd_lr: float
    batch_sizes: np.ndarray
    sgd: tuple[SharpnessHistory, ...]
    gd_median_ratio: np.ndarray
    gd_frac_within: np.ndarray
    gd_first_near: np.ndarray
    sgd_median_ratio: np.ndarray

    @property
    def gd_departure(self) -> np.ndarray:
        """The departure step of every GD run (empty without the flow)."""
        return np.array([f.departure for f in self.flow], dtype=int)


def edge_of_stability(
    problem: Problem,
    y0,
    *,
    key: PRNGKeyArray,
    lrs,
    n_steps: int,
    every: int,
    sgd_lr=None,
    batch_sizes=(),
    flow: bool = True,
    flow_max_steps: int = 100_000,
    flow_rtol: float = 1e-5,
    departure_tol: float = 0.05,
    max_iter: int = 30,
) -> EdgeOfStability:
    """The edge-of-stability study on one problem.

    For each ``lr`` in ``lrs``: full-batch GD with λmax every ``every`` steps and, with
    ``flow=True``, the gradient flow from the same start on the GD grid with GD's departure
    from it. For each ``B`` in ``batch_sizes``: SGD at ``sgd_lr`` (default ``lrs[0]``).
    See :class:`EdgeOfStability`.
    """
    y0 = problem.check_params(y0, "y0")
    lrs = [float(lr) for lr in lrs]
    med, within, first, gds, flows = [], [], [], [], []
    k_gd, k_sgd, k_flow = jr.split(key, 3)
    for i, lr in enumerate(lrs):
        hist = train_with_sharpness(GD(problem, lr), y0, key=jr.fold_in(k_gd, i), n_steps=n_steps, every=every,
                                    keep_params=flow, max_iter=max_iter)
        s = hist.summary(tol=0.1)
        med.append(s.median_ratio), within.append(s.frac_within_tol), first.append(s.first_step_near)
        if flow:
            fp = gradient_flow_path(problem, y0, np.asarray(hist.steps) * lr, rtol=flow_rtol,
                                    atol=flow_rtol * 1e-2, max_steps=flow_max_steps)
            step, rel = departure_step(hist, fp, tol=departure_tol)
            sharp = sharpness_along(problem, fp.params, key=jr.fold_in(k_flow, i), max_iter=max_iter)
            gap = np.abs(np.asarray(hist.sharpness) / sharp - 1.0)
            apart = np.nonzero(~(gap <= departure_tol))[0]
            flows.append(FlowComparison(loss=np.asarray(fp.loss), sharpness=sharp, rel_dist=rel,
                                        reached=np.asarray(fp.reached), departure=int(step),
                                        sharpness_departure=int(np.asarray(hist.steps)[apart[0]]) if apart.size else -1))
        gds.append(eqx.tree_at(lambda h: h.params, hist, jnp.zeros((hist.params.shape[0], 0), hist.params.dtype)))
    sgd_lr = lrs[0] if sgd_lr is None else float(sgd_lr)
    sgds = [train_with_sharpness(SGD(problem, sgd_lr, int(b)), y0, key=jr.fold_in(k_sgd, j), n_steps=n_steps,
                                 every=every, max_iter=max_iter) for j, b in enumerate(batch_sizes)]
    return EdgeOfStability(
        lrs=np.asarray(lrs), gd=tuple(gds), flow=tuple(flows), sgd_lr=sgd_lr,
        batch_sizes=np.asarray(list(batch_sizes), dtype=int), sgd=tuple(sgds), gd_median_ratio=np.asarray(med),
        gd_frac_within=np.asarray(within), gd_first_near=np.asarray(first, dtype=int),
        sgd_median_ratio=np.asarray([h.summary().median_ratio for h in sgds]),
    )


register_result(SharpnessHistory)
register_result(FlowPath)
register_result(SharpnessSummary)
register_result(FlowComparison)
register_result(EdgeOfStability)
