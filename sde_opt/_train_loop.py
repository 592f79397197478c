"""One train-and-measure loop: a jitted ``lax.scan`` over records, each running ``every``
optimizer steps of an engine dynamics and then measuring at the current parameters.

What is measured is a value (an :class:`AbstractMeasurement`): the sharpness by the
fixed-step Lanczos (:func:`sde_opt.stability.train_with_sharpness`), or the curvature and noise
diagnostics of :func:`sde_opt.curvature.track`. The training steps use the engine's key scheme:
step ``j`` draws from ``fold_in(fold_in(key, 0), j)``, so the parameters at the records are
those of path 0 of ``so.simulate(dyn, theta0, key=key, n_paths=1, ...)``; measurement ``s``
draws from ``fold_in(fold_in(key, 1), s)``.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr


class AbstractMeasurement(eqx.Module):
    """What a training loop records at each record; pure, so it runs inside the scan.

    ``init(theta0, key)`` gives the carry of the first record (e.g. Lanczos start vectors);
    ``__call__(problem, theta, key, carry)`` returns ``(row, carry)``: a pytree of arrays
    for this record and the carry handed to the next one (a warm start)."""

    @abc.abstractmethod
    def init(self, theta0, key):
        """The carry before the first record."""

    @abc.abstractmethod
    def __call__(self, problem, theta, key, carry):
        """``(row, carry)`` at ``theta``."""


_INIT = 0x7FFFFFFF  # the measurement key of init, apart from those of the records 0, 1, ...


@eqx.filter_jit
def train_and_measure(dyn, theta0, key, measurement: AbstractMeasurement, n_records: int, every: int):
    """Run ``(n_records - 1) · every`` steps of ``dyn`` from ``theta0``, measuring at the
    start and after every ``every`` steps. Returns ``(final parameters, rows)`` with a
    leading axis of ``n_records`` on every leaf of the rows."""
    problem = dyn.problem
    dt = jnp.asarray(dyn.natural_dt(), theta0.dtype)
    path_key = jr.fold_in(key, 0)  # path 0 of the engine's scheme
    k_meas = jr.fold_in(key, 1)

    def record(carry, s):
        state, m = carry

        def body(i, state):
            j = (s - 1) * every + i
            return dyn.step(state, j * dt, dt, jr.fold_in(path_key, j))

        state = jax.lax.fori_loop(0, jnp.where(s > 0, every, 0), body, state)
        row, m = measurement(problem, dyn.position(state), jr.fold_in(k_meas, s), m)
        return (state, m), row

    init = (dyn.init(theta0), measurement.init(theta0, jr.fold_in(k_meas, _INIT)))
    (state, _), rows = jax.lax.scan(record, init, jnp.arange(n_records))
    return dyn.position(state), rows


@eqx.filter_jit
def measure_along(problem, params, key, measurement: AbstractMeasurement):
    """The same measurement at each row of ``params`` ``(R, d)``, warm-started along the rows,
    in one jitted scan. Rows with non-finite entries give ``nan`` leaves and leave the
    carry as it was. Row ``s`` draws from ``fold_in(key, s)``."""

    def body(carry, xs):
        theta, s = xs
        ok = jnp.all(jnp.isfinite(theta))
        row, new = measurement(problem, jnp.nan_to_num(theta), jr.fold_in(key, s), carry)
        carry = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, carry)
        row = jax.tree_util.tree_map(lambda r: jnp.where(ok, r, jnp.nan) if jnp.issubdtype(r.dtype, jnp.floating)
                                     else r, row)
        return carry, row

    init = measurement.init(params[0], jr.fold_in(key, _INIT))
    _, rows = jax.lax.scan(body, init, (params, jnp.arange(params.shape[0])))
    return rows
