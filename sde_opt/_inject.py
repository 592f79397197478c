"""Shaped noise injection as an optax transform: any sde_opt noise model, at a chosen
temperature, added to the updates of any optimizer.

optax has only isotropic ``add_noise`` (with a decaying variance). :func:`inject_noise`
adds a draw ``ξ ~ N(0, τ·D(θ))`` of any :class:`sde_opt.AbstractNoise` ``D`` (isotropic,
diagonal, constant, Hessian-shaped, empirical Fisher, the mini-batch covariance; optionally
evaluated on a random sub-sample of the data at every step) to whatever updates pass
through it, so noise with the anisotropy of mini-batch noise can be given to a large-batch
optimizer with its scale decoupled from the learning rate and the batch size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ._checks import nonnegative, positive_int
from ._noise import AbstractNoise, ScaledNoise
from ._problem import Problem


class InjectNoiseState(NamedTuple):
    """State of :func:`inject_noise`: the number of updates so far and the seed's key."""

    count: jax.Array
    key: jax.Array


def _seed_key(seed):
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int or a jax.random.key, got {type(seed).__name__} {seed!r}.")
    return jr.key(seed)


def inject_noise(problem: Problem, noise: AbstractNoise, *, temperature, seed=0,
                 subsample: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""An optax transform that adds shaped noise to the updates:

    ``updates ← updates + ξ``,  ``ξ = √τ · G(θ) z ~ N(0, τ · D(θ))``,

    where ``D`` is ``noise.covariance(problem, θ)`` (the covariance of one example's
    gradient noise for the mini-batch models, ``B = 1``), ``G`` its factor as the noise
    model applies it (``noise.apply_factor``: a VJP for mini-batch and Fisher noise, HVPs
    for ``HessianNoise(method="lanczos")``; no ``d × d`` or ``N × d`` matrix unless the
    model forms one), ``θ`` the ``params`` given to ``update`` and ``τ = temperature``.

    **What is held fixed.** The covariance of what this transform adds to the updates
    passing through it: ``τ·D(θ)``, independent of the learning rate and of the batch
    size. Where it sits in a chain decides what that means for the parameters:

    * *before* the learning-rate scaling (``optax.chain(inject_noise(...), optax.sgd(lr))``):
      ``ξ`` is extra gradient noise; the parameter step gets ``lr²·τ·D``, the SDE
      temperature of the injected part is ``lr·τ`` (as mini-batch noise gives ``lr·c_B``,
      ``c_B = 1/B``, so ``τ = c_B`` imitates a batch of ``B``); momentum accumulates it and
      Adam's preconditioner sees it;
    * *after* it (last in the chain): ``ξ`` is added to the parameter step itself, with
      covariance ``τ·D`` per step whatever the optimizer, its rate and its batch.

    To compare noise shapes at equal strength use :func:`equal_trace` (``Tr τD`` the same for
    every shape at a reference point). ``temperature=0`` returns the updates untouched (bit
    for bit).

    Args:
        problem: the problem whose noise model is drawn (its data for the data-based models).
        noise: any noise model.
        temperature: ``τ >= 0``, a number fixed when the transform is built.
        seed: an int or a ``jax.random.key``; update ``k`` draws from ``fold_in(key, k)``.
        subsample: evaluate a data-based noise on ``subsample`` distinct examples drawn
            afresh at every update (``problem.subset``), the "sub-sampled per-example
            gradients" way. Given the sub-sample ``S`` the draw has covariance ``τ·D_S(θ)``;
            over the sub-samples, ``E D_S = D·(|S|−1)N/(|S|(N−1))`` for
            :class:`sde_opt.MinibatchNoise` (the centred covariance of a sample of ``|S|``
            distinct gradients) and ``E F_S = F`` for :class:`sde_opt.EmpiricalFisherNoise`.
            ``None``: all ``N`` examples.

    Returns:
        A ``GradientTransformationExtraArgs``. ``update(updates, state, params)`` needs
        ``params`` (flat, ``(d,)``: the noise can depend on ``θ``). The extra argument
        ``noise_key`` (a key) replaces the state's key for one update:
        :class:`sde_opt.OptaxDynamics` passes each path's own key there, so the paths of an
        ensemble draw independent noise.

    Examples:
        >>> import jax.numpy as jnp, optax, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
        >>> tx = optax.chain(so.inject_noise(prob, so.HessianNoise(), temperature=0.01, seed=0), optax.sgd(0.1))
        >>> theta = jnp.ones(2)
        >>> state = tx.init(theta)
        >>> updates, state = tx.update(prob.grad(theta), state, theta)
        >>> updates.shape
        (2,)
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be an so.Problem, got {type(problem).__name__}.")
    if not isinstance(noise, AbstractNoise):
        raise ValueError(f"noise must be a noise model such as so.HessianNoise(), got {type(noise).__name__}.")
    tau = float(nonnegative("temperature", temperature, finite=True))
    key0 = _seed_key(seed)
    if subsample is not None:
        problem._need_data("inject_noise(subsample=...)")
        subsample = positive_int("subsample", subsample, upper=problem.n_examples, upper_name="n_examples")

    def init(params):
        return InjectNoiseState(count=jnp.zeros((), jnp.int32), key=key0)

    def update(updates, state, params=None, *, noise_key=None, **extra):
        del extra
        if params is None:
            raise ValueError("inject_noise needs params in update(updates, state, params): the noise depends on θ.")
        count = state.count + 1
        if tau == 0.0:
            return updates, InjectNoiseState(count=count, key=state.key)
        flat = isinstance(params, (jax.Array, np.ndarray)) and isinstance(updates, (jax.Array, np.ndarray))
        theta = jnp.asarray(params) if flat else None
        if not flat or theta.ndim != 1 or jnp.shape(updates) != theta.shape:
            raise ValueError(
                "inject_noise works on flat parameters (d,), as the engine's optax dynamics use (a model's "
                f"flat vector is problem.theta0); got params {jax.tree_util.tree_map(jnp.shape, params)} and "
                f"updates {jax.tree_util.tree_map(jnp.shape, updates)}."
            )
        key = jr.fold_in(state.key, state.count) if noise_key is None else noise_key
        k_sub, k_z = jr.split(key)
        source = problem
        if subsample is not None:
            source = problem.subset(jr.choice(k_sub, problem.n_examples, (subsample,), replace=False))
        noise.check(source, theta.shape[0])
        z = jr.normal(k_z, (noise.n_normals(source, theta.shape[0]),), theta.dtype)
        xi = jnp.sqrt(jnp.asarray(tau, theta.dtype)) * noise.apply_factor(source, theta, z)
        return updates + xi.astype(jnp.result_type(updates)), InjectNoiseState(count=count, key=state.key)

    return optax.GradientTransformationExtraArgs(init, update)


def equal_trace(problem: Problem, theta, noises, *, trace=1.0) -> list[ScaledNoise]:
    """The noise models ``noises`` rescaled so that each covariance has trace ``trace`` at
    ``theta``: ``ScaledNoise(n, trace / Tr n.covariance(problem, θ))``. With
    :func:`inject_noise` they inject ``temperature · trace`` of total variance per update
    at ``theta`` (the scale is fixed there; the shape, and so the trace, may change as ``θ``
    moves). Uses each model's dense covariance: small and medium ``d``.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
        >>> iso, hess = so.optimizers.equal_trace(prob, jnp.zeros(2), [so.IsotropicNoise(1.0), so.HessianNoise()])
        >>> [round(float(jnp.trace(n.covariance(prob, jnp.zeros(2)))), 6) for n in (iso, hess)]
        [1.0, 1.0]
    """
    theta = problem.check_params(theta, "theta")
    target = float(nonnegative("trace", trace, finite=True))
    out = []
    for n in noises:
        if not isinstance(n, AbstractNoise):
            raise ValueError(f"noises must be noise models, got {type(n).__name__}.")
        n.check(problem, theta.shape[0])
        tr = float(jnp.trace(n.covariance(problem, theta)))
        if not tr > 0:
            raise ValueError(f"{type(n).__name__} has trace {tr:g} at theta; it cannot be rescaled to trace {target:g}.")
        out.append(ScaledNoise(n, target / tr))
    return out
