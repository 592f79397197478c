"""How the engine steps: integrators are values passed to the kernel.

An integrator advances *all* paths of a chunk by one step of the engine's time grid,
``state (n, ...) -> state``, drawing path ``i``'s step-``j`` randomness from
``fold_in(keys[i], j)``. Three are provided:

* :class:`EulerMaruyama` for continuous models (``drift``/``diffusion``), optionally with
  ``substeps`` finer steps per grid step: the one place where Euler–Maruyama is written;
* :class:`OwnStep` for everything else: each path takes the dynamics' own ``step``;
* :class:`SummedNormals` for Gaussian-noise discrete optimizers (``step_normals``), driven
  by the Brownian increment that ``EulerMaruyama(substeps)`` uses over the same step, so a
  discrete optimizer and its refined continuous model share their noise path by path.

The engine's default is :func:`default_integrator`: ``EulerMaruyama()`` for continuous
models, ``OwnStep()`` otherwise.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from ._checks import positive_int
from ._dynamics import AbstractContinuous, AbstractDynamics
from ._normals import step_normals


class AbstractIntegrator(eqx.Module):
    """One step of every path of a chunk.

    Subclasses implement :meth:`step` and may refuse dynamics they cannot step in
    :meth:`check` (a ``ValueError`` that names the fix).
    """

    def check(self, dyn: AbstractDynamics) -> None:
        """Raise ``ValueError`` if this integrator cannot step ``dyn``."""

    @abc.abstractmethod
    def step(self, dyn: AbstractDynamics, state, t, dt, keys, j):
        """``state`` of all paths (leading axis: paths) after one step ``[t, t + dt]``;
        ``keys`` are the path keys and ``j`` the step index (path ``i`` uses
        ``fold_in(keys[i], j)``)."""


def _substep_keys(keys, j):
    return jax.vmap(jr.fold_in, (0, None))(keys, j)


class EulerMaruyama(AbstractIntegrator):
    """Euler–Maruyama for ``dθ = b(θ) dt + σ(θ) dW`` on the whole batch of paths:

    ``θ ← θ + h b(t, θ) + √h σ(t, θ) z``,  ``z ~ N(0, I_r)``,  ``h = dt / substeps``,

    repeated ``substeps`` times per step of the grid (strong order 1/2, weak order 1;
    Kloeden & Platen 1992, §9.1 and §14.1). The step of one path is vmapped over the batch
    and each (sub)step draws one ``(paths, r)`` block of normals.

    Random numbers: with ``substeps=1``, path ``i`` at step ``j`` uses
    ``normal(fold_in(fold_in(key, i), j), (r,))``, the same numbers a discrete
    :class:`sde_opt.NoisyGD` step draws; with ``substeps=m > 1``, substep ``s`` uses
    ``normal(fold_in(fold_in(fold_in(key, i), j), s), (r,))``, and
    ``SummedNormals(substeps=m)`` drives a discrete optimizer with
    ``Σ_s z_s / √m``, the same Brownian increment.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.eye(2))
        >>> sde = so.SGDSDE(prob, lr=0.1, batch_size=1, noise=so.IsotropicNoise(1.0))
        >>> ens = so.observe(sde, jnp.ones(2), so.SavePositions(), key=jr.key(0), n_paths=4, n_steps=10,
        ...                  integrator=so.EulerMaruyama(substeps=8))
        >>> ens["ys"].shape
        (4, 11, 2)
    """

    substeps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        positive_int("substeps", self.substeps)

    def check(self, dyn):
        if not isinstance(dyn, AbstractContinuous):
            raise ValueError(
                f"EulerMaruyama steps continuous models (drift and diffusion), not {type(dyn).__name__}; "
                "leave integrator=None (its own step) or pass so.OwnStep()."
            )

    @staticmethod
    def increment(dyn: AbstractContinuous, theta, t, h, z):
        """The Euler–Maruyama step of length ``h`` of one path ``theta (D,)`` with the
        standard normals ``z (r,)`` (``None`` for an ODE)."""
        out = theta + h * dyn.drift(t, theta)
        if z is not None:
            out = out + jnp.sqrt(h) * dyn.diffusion_apply(t, theta, z)
        return out

    def _batch(self, dyn, theta, t, h, z):
        if z is None:
            return jax.vmap(lambda th: self.increment(dyn, th, t, h, None))(theta)
        return jax.vmap(lambda th, zz: self.increment(dyn, th, t, h, zz))(theta, z)

    def step(self, dyn, state, t, dt, keys, j):
        r = dyn.n_normals(state.shape[1])
        if self.substeps == 1:
            z = step_normals(keys, j, r, state.dtype) if r else None
            return self._batch(dyn, state, t, dt, z)
        h = dt / self.substeps
        sub = _substep_keys(keys, j)

        def body(s, y):
            z = step_normals(sub, s, r, y.dtype) if r else None
            return self._batch(dyn, y, t + s * h, h, z)

        return jax.lax.fori_loop(0, self.substeps, body, state)

    def step_path(self, dyn: AbstractContinuous, theta, t, dt, key):
        """One step of one path with its step key (``normal(key, (r,))``): what
        :meth:`sde_opt.AbstractContinuous.step` does."""
        if self.substeps != 1:
            raise ValueError("step_path takes one Euler–Maruyama step; use substeps=1.")
        r = dyn.n_normals(theta.shape[0])
        z = jr.normal(key, (r,), dtype=theta.dtype) if r else None
        return self.increment(dyn, theta, t, dt, z)


class OwnStep(AbstractIntegrator):
    """Each path takes the dynamics' own ``step(state, t, dt, key)`` with its step key
    ``fold_in(fold_in(key, i), j)`` (vmapped over paths): the integrator of discrete
    algorithms (``SGD``, ``NoisyGD``, optax optimizers)."""

    def step(self, dyn, state, t, dt, keys, j):
        return jax.vmap(dyn.step, (0, None, None, 0))(state, t, dt, _substep_keys(keys, j))


class SummedNormals(AbstractIntegrator):
    """A Gaussian-noise discrete optimizer (one with ``step_normals(state, t, z)`` and
    ``n_normals(d)``, e.g. :class:`sde_opt.optimizers.NoisyOptax`) driven by the normals that
    ``EulerMaruyama(substeps)`` draws over the same step, ``z = Σ_s z_s / √substeps``:
    the optimizer sees the Brownian increment of the refined continuous path (this is how
    :func:`sde_opt.optimizers.coupled_paths` couples them). ``substeps=1`` is the optimizer's own step.
    """

    substeps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        positive_int("substeps", self.substeps)

    def check(self, dyn):
        if not (hasattr(dyn, "step_normals") and hasattr(dyn, "n_normals")):
            raise ValueError(
                f"{type(dyn).__name__} draws its own noise and cannot be driven by given normals; use a "
                "Gaussian-noise optimizer with step_normals, e.g. model.discrete() or so.optimizers.NoisyOptax(...)."
            )

    def step(self, dyn, state, t, dt, keys, j):
        theta = jax.vmap(dyn.position)(state)
        r = dyn.n_normals(theta.shape[1])
        if self.substeps == 1:
            z = step_normals(keys, j, r, theta.dtype)
        else:
            sub = _substep_keys(keys, j)
            blocks = jax.vmap(lambda k: jax.vmap(lambda s: jr.normal(jr.fold_in(k, s), (r,), theta.dtype))(
                jnp.arange(self.substeps)))(sub)
            z = jnp.sum(blocks, axis=1) / jnp.sqrt(self.substeps)
        return jax.vmap(dyn.step_normals, (0, None, 0))(state, t, z)


def default_integrator(dyn: AbstractDynamics) -> AbstractIntegrator:
    """``EulerMaruyama()`` for continuous models, ``OwnStep()`` for the others."""
    return EulerMaruyama() if isinstance(dyn, AbstractContinuous) else OwnStep()
