"""First exits: run paths until each has left a region, stopping early when all have.

Exit regions are values (:class:`Ball`, :class:`HalfSpace`, :class:`LossAbove`,
:class:`CloserToOther`) or any function ``exit_fn(θ) -> bool`` that is true *outside*.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int

from ._checks import positive, positive_int
from ._dynamics import AbstractContinuous, AbstractDynamics
from ._engine import check_key, check_start, resolve_dt, run_observers
from ._observers import AbstractObserver
from ._problem import Problem


class AbstractRegion(eqx.Module):
    """A region a path starts in; ``outside(problem, θ)`` is true once it has left."""

    @abc.abstractmethod
    def outside(self, problem: Problem, theta) -> Bool[Array, ""]:
        ...

    def boundary_distance(self, theta) -> tuple[Float[Array, ""], Float[Array, " d"]] | None:
        """``(distance to the boundary, outward unit normal)`` for the Brownian-bridge
        correction; ``None`` when the region has no such flat/spherical boundary."""
        return None

    def __call__(self, theta):  # so a region also works as a plain exit_fn(θ) without a problem
        return self.outside(None, theta)


class Ball(AbstractRegion):
    """Inside: ``‖θ − center‖ < radius``."""

    center: Float[Array, " d"]
    radius: Float[Array, ""]

    def __init__(self, center, radius):
        self.center = jnp.asarray(center, dtype=jnp.result_type(float))
        if self.center.ndim != 1:
            raise ValueError(f"center must be a vector (d,), got shape {self.center.shape}.")
        self.radius = positive("radius", radius)

    def outside(self, problem, theta):
        return jnp.sum((theta - self.center) ** 2) >= self.radius**2

    def boundary_distance(self, theta):
        e = theta - self.center
        r = jnp.sqrt(jnp.sum(e**2))
        n = e / jnp.maximum(r, 1e-30)
        return self.radius - r, n


class HalfSpace(AbstractRegion):
    """Inside: ``normal · θ < offset``; the path exits across the hyperplane."""

    normal: Float[Array, " d"]
    offset: Float[Array, ""]

    def __init__(self, normal, offset=0.0):
        n = jnp.asarray(normal, dtype=jnp.result_type(float))
        if n.ndim != 1:
            raise ValueError(f"normal must be a vector (d,), got shape {n.shape}.")
        norm = jnp.linalg.norm(n)
        if float(norm) == 0.0:
            raise ValueError("normal must be a non-zero vector.")
        self.normal = n / norm
        self.offset = jnp.asarray(offset, dtype=n.dtype) / norm

    def outside(self, problem, theta):
        return self.normal @ theta >= self.offset

    def boundary_distance(self, theta):
        return self.offset - self.normal @ theta, self.normal


class LossAbove(AbstractRegion):
    """Inside: ``L(θ) < level`` (the sublevel set of the start)."""

    level: Float[Array, ""]

    def __init__(self, level):
        self.level = jnp.asarray(level, dtype=jnp.result_type(float))

    def outside(self, problem, theta):
        if problem is None:
            raise ValueError("LossAbove needs the problem; use it through so.first_exit.")
        return problem.loss(theta) >= self.level


class CloserToOther(AbstractRegion):
    """Inside: ``θ`` is closer to ``minima[home]`` than to any other of ``minima`` (the
    Voronoi cell of the start minimum); exiting means reaching another basin's side."""

    minima: Float[Array, "m d"]
    home: int = eqx.field(static=True)

    def __init__(self, minima, home: int = 0):
        m = jnp.asarray(minima, dtype=jnp.result_type(float))
        if m.ndim != 2 or m.shape[0] < 2:
            raise ValueError(f"minima must be an (m, d) array with m >= 2, got shape {m.shape}.")
        if not 0 <= home < m.shape[0]:
            raise ValueError(f"home={home} is not an index of the {m.shape[0]} minima.")
        self.minima, self.home = m, int(home)

    def outside(self, problem, theta):
        d2 = jnp.sum((self.minima - theta) ** 2, axis=-1)
        return jnp.argmin(d2) != self.home


class _FunctionRegion(AbstractRegion):
    fn: Callable = eqx.field(static=True)

    def outside(self, problem, theta):
        out = jnp.asarray(self.fn(theta))
        if out.shape != ():
            raise ValueError(f"exit_fn must return a scalar bool, got shape {out.shape}.")
        return out.astype(bool)


def as_region(exit_fn) -> AbstractRegion:
    if isinstance(exit_fn, AbstractRegion):
        return exit_fn
    if callable(exit_fn):
        return _FunctionRegion(exit_fn)
    raise ValueError(f"exit_fn must be a region (so.Ball, ...) or a function θ -> bool, got {type(exit_fn).__name__}.")


class ExitTimes(eqx.Module):
    """First-exit data of an ensemble.

    Attributes:
        times: ``(n,)`` SDE time of exit, or the horizon for censored paths.
        exited: ``(n,)`` true where the path left before the horizon.
        positions: ``(n, d)`` where each path was when it was seen outside (censored: at the horizon).
        diverged: ``(n,)`` paths whose state became non-finite (counted as exited, flagged here).
        horizon: the censoring time ``max_steps · dt``.
        n_steps_run: steps the kernel actually ran (early stop when every path has left).
    """

    times: Float[Array, " n"]
    exited: Bool[Array, " n"]
    positions: Float[Array, "n d"]
    diverged: Bool[Array, " n"]
    horizon: Float[Array, ""]
    n_steps_run: Int[Array, ""]

    @property
    def n_paths(self) -> int:
        return int(self.times.shape[0])


def _crossed_between(dyn: AbstractContinuous, region: AbstractRegion, t, dt, x0, x1, u):
    """Brownian-bridge test: did the continuous path cross the boundary between two inside
    grid points? ``P = exp(−2 a b / (σₙ² dt))`` with ``a, b`` the distances of ``x0, x1`` to
    the (locally flat) boundary and ``σₙ² = ‖σ(x0)ᵀ n‖²`` the diffusion along its normal."""
    a, n = region.boundary_distance(x0)
    b, _ = region.boundary_distance(x1)
    r = dyn.n_normals(x0.shape[0])
    _, vjp = jax.vjp(lambda z: dyn.diffusion_apply(t, x0, z), jnp.zeros((r,), x0.dtype))
    s2 = jnp.sum(vjp(n)[0] ** 2)
    p = jnp.exp(-2.0 * jnp.maximum(a, 0.0) * jnp.maximum(b, 0.0) / jnp.maximum(s2 * dt, 1e-300))
    return u < p


class FirstExit(AbstractObserver):
    """The first exit of every path from a region (an observer for :func:`sde_opt.observe`;
    :func:`first_exit` is the engine run with it).

    After each step a path that is still inside is looked at: it has left when
    ``region.outside(θ)`` is true, when its position became non-finite (flagged as
    diverged), or, with ``bridge=True``, when the Brownian bridge between the two grid
    points crossed the boundary (probability ``exp(−2ab/(σₙ²dt))``, see
    :func:`first_exit`). The bridge's uniform of path ``i`` at step ``j`` is
    ``uniform(fold_in(fold_in(fold_in(key, i), j), 0x5EED))``. With ``early_stop`` the
    kernel stops once every path has left.

    Result: ``{"times", "exited", "positions", "diverged"}``, each with a leading path axis;
    a path that never left has ``times`` = the horizon and its final position.
    """

    region: AbstractRegion
    bridge: bool = eqx.field(static=True, default=False)
    early_stop: bool = eqx.field(static=True, default=True)

    def __init__(self, region, bridge: bool = False, early_stop: bool = True):
        self.region = as_region(region)
        self.bridge = bool(bridge)
        self.early_stop = bool(early_stop)

    def init(self, theta0, run):
        n = theta0.shape[0]
        horizon = run.n_steps * run.dt
        return jnp.ones(n, bool), jnp.full(n, horizon, theta0.dtype), theta0, jnp.zeros(n, bool)

    def update(self, carry, step):
        active, times, pos, div = carry
        dyn, j, x0, x1 = step.dyn, step.j, step.before, step.theta
        bad = ~jnp.all(jnp.isfinite(x1), axis=-1)
        left = jax.vmap(lambda th: self.region.outside(dyn.problem, th))(x1) | bad
        if self.bridge:
            ukeys = jax.vmap(lambda k: jr.fold_in(jr.fold_in(k, j), 0x5EED))(step.keys)
            u = jax.vmap(lambda k: jr.uniform(k, dtype=x0.dtype))(ukeys)
            crossed = jax.vmap(lambda a, b, uu: _crossed_between(dyn, self.region, step.t, step.dt, a, b, uu))(x0, x1, u)
            left = left | crossed
        now = active & left
        times = jnp.where(now, (j + 1) * step.dt, times)
        pos = jnp.where(now[:, None], x1, pos)
        return active & ~now, times, pos, div | (now & bad)

    def done(self, carry):
        return ~jnp.any(carry[0]) if self.early_stop else None

    def finalize(self, carry, theta, run):
        active, times, pos, div = carry
        pos = jnp.where(active[:, None], theta, pos)
        return {"times": times, "exited": ~active, "positions": pos, "diverged": div}


def first_exit(
    dyn: AbstractDynamics,
    y0,
    exit_fn,
    *,
    key,
    n_paths: int,
    max_steps: int,
    dt=None,
    block: int = 32,
    bridge: bool = False,
    chunk_size: int | None = None,
    early_stop: bool = True,
    checkpoint=None,
    progress=None,
) -> ExitTimes:
    """Run paths of ``dyn`` from ``y0`` until each leaves the region (``exit_fn(θ)`` true)
    or ``max_steps`` steps have passed (censored at the horizon ``max_steps · dt``).

    The engine's kernel runs with the :class:`FirstExit` observer, in blocks of ``block``
    steps inside a ``while_loop`` that stops as soon as every path has left. Path ``i`` uses
    the same random numbers as in :func:`sde_opt.simulate` with the same key.

    A path is only looked at on the time grid, so a crossing and return within one step is
    missed, which biases exit times upward. ``bridge=True`` (continuous models, ``Ball`` and
    ``HalfSpace`` regions) adds the Brownian-bridge correction: between two inside points
    the path is declared to have crossed with probability ``exp(−2ab/(σₙ²dt))``.

    Args:
        exit_fn: a region value (``so.Ball``, ``so.HalfSpace``, ``so.LossAbove``,
            ``so.CloserToOther``) or a function ``θ -> bool``, true outside.
        block: steps between checks of "has every path left?".
        chunk_size: paths per kernel call.
        early_stop: stop when every path has left (``False`` runs to the horizon; for
            benchmarks).
        checkpoint: a directory for a resumable run: each finished chunk of paths is
            stored there atomically, and a rerun with the same configuration loads it instead
            of computing it (a directory of another configuration is refused). Default none.
        progress: a progress bar (tqdm): ``None`` auto (a terminal or a notebook, once the
            run has taken 2 s), ``True``, ``False``.

    Returns:
        :class:`ExitTimes` (``times``, ``exited``, ``positions``, ``diverged``, ``horizon``).
    """
    if not isinstance(dyn, AbstractDynamics):
        raise ValueError(f"dyn must be a dynamics such as so.SGDSDE(...), got {type(dyn).__name__}.")
    region = as_region(exit_fn)
    key = check_key(key)
    n_paths = positive_int("n_paths", n_paths)
    max_steps = positive_int("max_steps", max_steps)
    block = positive_int("block", block)
    dt = resolve_dt(dyn, dt)
    y0 = check_start(dyn, y0, n_paths)
    if bridge:
        if not isinstance(dyn, AbstractContinuous):
            raise ValueError("bridge=True applies to continuous models (SGDSDE), not discrete algorithms.")
        if region.boundary_distance(y0[0]) is None:
            raise ValueError("bridge=True needs a Ball or HalfSpace region (a boundary with a known normal).")
    try:
        jax.eval_shape(lambda th: region.outside(dyn.problem, th), y0[0])
    except (TypeError, ValueError) as err:
        raise ValueError(f"exit_fn ({type(region).__name__}) does not accept the problem's parameters of shape "
                         f"{y0[0].shape}: {err}") from None
    start_out = jax.vmap(lambda th: region.outside(dyn.problem, th))(y0)
    if bool(jnp.any(start_out)):
        raise ValueError("y0 is already outside the region (exit_fn(y0) is true); start inside it.")
    observer = FirstExit(region, bridge=bool(bridge), early_stop=bool(early_stop))
    out, steps = run_observers(dyn, y0, observer, key=key, n_steps=max_steps, dt=dt, chunk_size=chunk_size,
                               block=block, checkpoint=checkpoint, progress=progress)
    return ExitTimes(
        times=out["times"], exited=out["exited"], positions=out["positions"], diverged=out["diverged"],
        horizon=jnp.asarray(max_steps * dt, y0.dtype), n_steps_run=jnp.asarray(steps),
    )
