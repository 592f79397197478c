"""What the engine records along the paths: observers are values passed to the kernel.

An observer sees every step of a chunk of paths and keeps its own carry (arrays with a
leading path axis, or buffers it fills): ``init`` builds it from the start, ``update``
folds in one step, ``record`` (for observers with ``every``) stores a row every ``every``
steps, ``done`` may ask the kernel to stop early, ``finalize`` turns the carry into the
result (a pytree whose leaves have a leading path axis). :func:`sde_opt.simulate`,
:func:`sde_opt.first_exit` and :func:`sde_opt.max_excursion` are the engine run with
:class:`SavePositions`, :class:`sde_opt.FirstExit` and :class:`RunningMax`;
:func:`sde_opt.observe` runs any of them, a user's own among them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._checks import positive_int


class RunInfo(NamedTuple):
    """What an observer knows about the run of a chunk: ``dyn``, the step ``dt``,
    ``n_steps`` and the ``keys`` of its paths."""

    dyn: Any
    dt: Any
    n_steps: int
    keys: Any


class StepInfo(NamedTuple):
    """One step of every path of a chunk, as :meth:`AbstractObserver.update` sees it.

    Attributes:
        j: index of the step just taken (``j + 1`` steps done).
        t: time at its start (``j · dt``); ``dt``: its length.
        before, theta: positions ``(n, d)`` before and after the step.
        keys: the path keys (path ``i`` drew from ``fold_in(keys[i], j)``).
        dyn: the dynamics.
    """

    j: Any
    t: Any
    dt: Any
    before: Any
    theta: Any
    keys: Any
    dyn: Any


class AbstractObserver(eqx.Module):
    """What to record along the paths of the engine (in the spirit of diffrax's
    ``SaveAt`` and ``Event``). Write one by subclassing and defining :meth:`init` and
    :meth:`finalize`, plus :meth:`update` (every step) and/or :meth:`record` (every
    ``every`` steps: give the class an ``int`` field ``every``; without one, ``record``
    is never called).

    All arrays have a leading path axis ``n``: paths are batched, and the engine chunks and
    shards them, so an observer must treat paths independently (that is what makes results
    independent of the chunk size). Positions are ``theta`` ``(n, d)``. ``run`` (a
    :class:`RunInfo`) holds ``dyn, dt, n_steps, keys``; ``step`` (a :class:`StepInfo`) holds
    ``j`` (the step just taken), ``t``, ``dt``, ``before`` and ``theta`` (positions before and
    after it), ``keys`` and ``dyn``.

    Example: the running mean of ``‖θ_k‖²`` over steps ``1 … n_steps`` of every path.

        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> class MeanSquare(so.AbstractObserver):
        ...     def init(self, theta0, run):
        ...         return jnp.zeros(theta0.shape[0], theta0.dtype)
        ...     def update(self, total, step):
        ...         return total + jnp.sum(step.theta**2, axis=-1)
        ...     def finalize(self, total, theta, run):
        ...         return total / run.n_steps
        >>> sde = so.SGDSDE(so.landscapes.quadratic(jnp.eye(2)), lr=0.1, batch_size=1, noise=so.HessianNoise())
        >>> so.observe(sde, jnp.ones(2), MeanSquare(), key=jr.key(0), n_paths=5, n_steps=20).shape
        (5,)
    """

    @abc.abstractmethod
    def init(self, theta0: Float[Array, "n d"], run: RunInfo):
        """The carry before the first step, from the start positions."""

    def update(self, carry, step: StepInfo):
        """The carry after one more step (default: unchanged)."""
        return carry

    def record(self, carry, index, theta: Float[Array, "n d"]):
        """Called after steps ``every, 2·every, …`` (``index = 0, 1, …``) when the observer
        has an ``every`` field."""
        return carry

    def done(self, carry) -> Bool[Array, ""] | None:
        """``True`` once nothing more will change (every path has finished): the kernel
        stops early when every observer is done. ``None``: never (the default)."""
        return None

    @abc.abstractmethod
    def finalize(self, carry, theta: Float[Array, "n d"], run: RunInfo):
        """The result: a pytree of arrays with a leading path axis."""


def record_every(observer: AbstractObserver) -> int | None:
    """The observer's recording period (its ``every`` field), or ``None``."""
    return getattr(observer, "every", None)


def _n_saves(run: RunInfo, every: int) -> int:
    return run.n_steps // every


def _finite_rows(theta):
    return jnp.all(jnp.isfinite(theta), axis=-1)


class SavePositions(AbstractObserver):
    """The positions every ``every`` steps, with the start as row 0.

    Result: ``{"ys": (n, S, d), "diverged": (n,)}`` with ``S = n_steps // every + 1``;
    ``diverged`` marks paths whose final position is non-finite.
    """

    every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        positive_int("every", self.every)

    def init(self, theta0, run):
        buf = jnp.zeros((_n_saves(run, self.every) + 1,) + theta0.shape, theta0.dtype)
        return buf.at[0].set(theta0)

    def record(self, buf, index, theta):
        return buf.at[index + 1].set(theta)

    def finalize(self, buf, theta, run):
        return {"ys": jnp.swapaxes(buf, 0, 1), "diverged": ~_finite_rows(theta)}


class SaveObservable(AbstractObserver):
    """A function of the position, ``fn(θ) -> array`` (one path, ``θ`` of shape ``(d,)``),
    every ``every`` steps, with its value at the start as row 0; no paths are stored.

    Result: ``(n, S, *fn_shape)`` with ``S = n_steps // every + 1``.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.eye(2))
        >>> sde = so.SGDSDE(prob, lr=0.1, batch_size=1, noise=so.HessianNoise())
        >>> loss = so.observe(sde, jnp.ones(2), so.SaveObservable(prob.loss, every=5), key=jr.key(0),
        ...                   n_paths=3, n_steps=20)
        >>> loss.shape
        (3, 5)
    """

    fn: Callable
    every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if not callable(self.fn):
            raise ValueError(f"fn must be a function θ -> array, got {type(self.fn).__name__}.")
        positive_int("every", self.every)

    def init(self, theta0, run):
        row = jax.vmap(self.fn)(theta0)
        buf = jnp.zeros((_n_saves(run, self.every) + 1,) + row.shape, row.dtype)
        return buf.at[0].set(row)

    def record(self, buf, index, theta):
        return buf.at[index + 1].set(jax.vmap(self.fn)(theta))

    def finalize(self, buf, theta, run):
        return jnp.swapaxes(buf, 0, 1)


def _euclidean(e):
    return jnp.sqrt(jnp.sum(e**2))


class RunningMax(AbstractObserver):
    """Running maximum of ``norm(θ − center)`` over the steps (the start included),
    recorded every ``every`` steps; ``+inf`` once a path is non-finite. The statistic of
    :func:`sde_opt.max_excursion` and :func:`sde_opt.stability_radius`.

    Result: ``(n, n_steps // every)``, column ``k`` the maximum up to step ``(k + 1)·every``.
    """

    center: Float[Array, " d"]
    every: int = eqx.field(static=True, default=1)
    norm: Callable = _euclidean

    def __check_init__(self):
        positive_int("every", self.every)

    def _dist(self, theta):
        e = jax.vmap(self.norm)(theta - self.center)
        ok = _finite_rows(theta) & jnp.isfinite(e)
        return jnp.where(ok, e, jnp.inf)

    def init(self, theta0, run):
        run_max = self._dist(theta0)
        return run_max, jnp.zeros((_n_saves(run, self.every),) + run_max.shape, run_max.dtype)

    def update(self, carry, step):
        run_max, buf = carry
        return jnp.maximum(run_max, self._dist(step.theta)), buf

    def record(self, carry, index, theta):
        run_max, buf = carry
        return run_max, buf.at[index].set(run_max)

    def finalize(self, carry, theta, run):
        return jnp.swapaxes(carry[1], 0, 1)
