"""SVAG: reach the SDE limit with real mini-batches (Li, Malladi & Arora 2021).

Stochastic Variance Amplified Gradient with amplification ``ℓ ≥ 1`` draws two independent
batches ``γ₁, γ₂`` of size ``B`` and uses

    g_ℓ = ((1 + √(2ℓ − 1))/2) ∇L_{γ₁} + ((1 − √(2ℓ − 1))/2) ∇L_{γ₂},

whose mean is ``∇L`` and whose covariance is ``ℓ·D/B`` (the weights sum to 1 and their
squares to ``ℓ``). SGD on ``g_ℓ`` with step ``lr/ℓ`` for ``ℓ·K`` steps covers the same SDE
time ``t = K·lr`` with per-unit-time noise ``lr·D/B`` (as SGD), in ever smaller steps: as
``ℓ → ∞`` it converges weakly, at order 1 in ``1/ℓ``, to the SDE
``dθ = −∇L dt + √(lr/B · D(θ)) dW`` (Li, Malladi & Arora 2021, Theorem 4.3), while the
noise stays the real, non-Gaussian mini-batch noise. ``ℓ = 1`` is plain SGD with
replacement, so a statistic that does not move as ``ℓ`` grows certifies that the SDE
describes SGD at that ``lr``.

For RMSprop and Adam (Malladi et al. 2022) the same estimator is combined with the
square-root scaling rule at ``κ = 1/ℓ`` (the amplified noise acts as a batch ``ℓ`` times
smaller): ``lr → lr/√ℓ``, ``1 − β → (1 − β)/ℓ``, ``ε → ε√ℓ``, ``ℓ·K`` steps of SDE time
``lr²/ℓ``; the limit is :class:`sde_opt.optimizers.RMSpropSDE` / :class:`sde_opt.optimizers.AdamSDE` with
``MinibatchNoise`` at the original hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import jax.random as jr
import optax
from jaxtyping import Array, Float

from ._checks import check_batch, check_optimizer, is_concrete, positive
from ._dynamics import SGDSDE, AbstractDiscrete, AbstractOptax, _sample_batch, dropout_key
from ._engine import simulate
from ._io import register_result
from ._fit import power_law_exponent
from ._noise import MinibatchNoise
from ._optimizers import AdamSDE, RMSpropSDE, adam_moments, global_rmsprop
from ._problem import Problem
from ._scaling import sqrt_scaling_rule


def _amplification(ell):
    ell = positive("ell", ell)
    if is_concrete(ell) and float(ell) < 1.0:
        raise ValueError(f"ell must be >= 1 (ell = 1 is plain SGD), got {float(ell):g}.")
    return ell


def svag_weights(ell):
    """The SVAG weights ``((1 + √(2ℓ − 1))/2, (1 − √(2ℓ − 1))/2)``: sum 1, squares sum ``ℓ``."""
    a = jnp.sqrt(2.0 * ell - 1.0)
    return 0.5 * (1.0 + a), 0.5 * (1.0 - a)


def svag_gradient(problem: Problem, theta, key, batch_size: int, ell, replacement: bool = True):
    """One SVAG gradient ``g_ℓ`` from two independent batches of size ``batch_size``:
    mean ``∇L(θ)``, covariance ``ℓ · Var(g_B)``."""
    k1, k2 = jr.split(key)
    n = problem.n_examples
    w1, w2 = svag_weights(ell)
    g1 = problem.batch_grad(theta, _sample_batch(k1, n, batch_size, replacement), dropout_key(k1))
    g2 = problem.batch_grad(theta, _sample_batch(k2, n, batch_size, replacement), dropout_key(k2))
    return w1 * g1 + w2 * g2


class SVAG(AbstractDiscrete):
    """SGD on the SVAG gradient: ``θ ← θ − (lr/ℓ)·g_ℓ``, one step per SDE time ``lr/ℓ``.

    ``ℓ = 1`` is SGD (with replacement); as ``ℓ → ∞`` the paths converge weakly, with
    error O(1/ℓ), to :meth:`limit`, ``SGDSDE(problem, lr, batch_size, MinibatchNoise())``.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
        >>> dyn = so.optimizers.SVAG(prob, lr=0.2, batch_size=4, ell=8)          # dt = 0.025
        >>> ens = so.simulate(dyn, jnp.zeros(2), key=jr.key(1), n_paths=8, n_steps=40)
        >>> float(ens.ts[-1])
        1.0
    """

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    ell: Float[Array, ""]
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size, ell, *, replacement: bool = True):
        problem._need_data("SVAG")
        self.problem = problem
        self.lr = positive("lr", lr)
        self.batch_size = check_batch(problem, batch_size, required=True)
        self.ell = _amplification(ell)
        self.replacement = bool(replacement)

    def natural_dt(self):
        return self.lr / self.ell

    def step(self, state, t, dt, key):
        g = svag_gradient(self.problem, state, key, self.batch_size, self.ell, self.replacement)
        return state - (self.lr / self.ell) * g

    def limit(self) -> SGDSDE:
        """The SDE that SVAG reaches as ``ℓ → ∞``."""
        return SGDSDE(self.problem, self.lr, self.batch_size, MinibatchNoise(), replacement=self.replacement)


class SVAGOptax(AbstractOptax):
    """Any optax optimizer fed SVAG gradients ``g_ℓ`` (the optimizer carries its own,
    already scaled, hyperparameters); ``dt`` is the SDE time of one step. Build the adaptive
    SVAG of Malladi et al. (2022) with :func:`svag_rmsprop` and :func:`svag_adam`."""

    problem: Problem
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    ell: Float[Array, ""]
    dt: Float[Array, ""]
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, optimizer, batch_size, ell, *, dt, replacement: bool = True):
        problem._need_data("SVAGOptax")
        check_optimizer(optimizer)
        self.problem = problem
        self.optimizer = optimizer
        self.batch_size = check_batch(problem, batch_size, required=True)
        self.ell = _amplification(ell)
        self.dt = positive("dt", dt)
        self.replacement = bool(replacement)

    def natural_dt(self):
        return self.dt

    def gradient(self, theta, key):
        return svag_gradient(self.problem, theta, key, self.batch_size, self.ell, self.replacement)


def svag_rmsprop(problem: Problem, lr, batch_size, ell, decay=0.999, eps=1e-8, *, initial_scale=0.0,
                 eps_in_sqrt: bool = True, per_coordinate: bool = True, replacement: bool = True) -> SVAGOptax:
    """RMSprop-SVAG (Malladi et al. 2022): ``optax.rmsprop`` (or :func:`sde_opt.optimizers.global_rmsprop`)
    at the square-root-scaled hyperparameters for ``κ = 1/ℓ`` on SVAG gradients, with
    ``dt = lr²/ℓ``. As ``ℓ → ∞`` it converges to
    ``RMSpropSDE(problem, lr, batch_size, MinibatchNoise(), decay, eps, ...)`` (:func:`svag_limit_rmsprop`)."""
    ell = _amplification(ell)
    hp = sqrt_scaling_rule(1.0 / float(ell), lr=float(lr), decay=float(decay), eps=float(eps),
                           initial_scale=float(initial_scale), eps_in_sqrt=eps_in_sqrt)
    maker = optax.rmsprop if per_coordinate else global_rmsprop
    opt = maker(hp["lr"], hp["decay"], hp["eps"], initial_scale=hp["initial_scale"], eps_in_sqrt=eps_in_sqrt)
    return SVAGOptax(problem, opt, batch_size, ell, dt=hp["lr"] ** 2, replacement=replacement)


def svag_adam(problem: Problem, lr, batch_size, ell, b1=0.9, b2=0.999, eps=1e-8, *, initial_scale=0.0,
              bias_correction: bool = True, replacement: bool = True) -> SVAGOptax:
    """Adam-SVAG (Malladi et al. 2022): Adam (:func:`sde_opt.optimizers.adam_moments`, i.e. ``optax.adam``
    with the defaults) at the square-root-scaled hyperparameters for ``κ = 1/ℓ`` on SVAG
    gradients, ``dt = lr²/ℓ``; limit ``AdamSDE(problem, lr, batch_size, MinibatchNoise(), ...)``."""
    ell = _amplification(ell)
    hp = sqrt_scaling_rule(1.0 / float(ell), lr=float(lr), b1=float(b1), b2=float(b2), eps=float(eps),
                           initial_scale=float(initial_scale))
    opt = adam_moments(hp["lr"], hp["b1"], hp["b2"], hp["eps"], initial_scale=hp["initial_scale"],
                       bias_correction=bias_correction)
    return SVAGOptax(problem, opt, batch_size, ell, dt=hp["lr"] ** 2, replacement=replacement)


def svag_limit_rmsprop(problem: Problem, lr, batch_size, decay=0.999, eps=1e-8, **kw) -> RMSpropSDE:
    """The ``ℓ → ∞`` limit of :func:`svag_rmsprop`: the RMSprop SDE with mini-batch noise."""
    return RMSpropSDE(problem, lr, batch_size, MinibatchNoise(), decay, eps, **kw)


def svag_limit_adam(problem: Problem, lr, batch_size, b1=0.9, b2=0.999, eps=1e-8, **kw) -> AdamSDE:
    """The ``ℓ → ∞`` limit of :func:`svag_adam`: the Adam SDE with mini-batch noise."""
    return AdamSDE(problem, lr, batch_size, MinibatchNoise(), b1, b2, eps, **kw)


class SVAGStudy(eqx.Module):
    """A statistic of SVAG against its SDE limit as ``ℓ`` grows (:func:`svag_study`).

    Attributes:
        ells: ``(n,)`` amplifications; ts: ``(S,)`` the saved times.
        mean, se: ``(n, S)`` the statistic's mean over paths and its standard error.
        limit_mean, limit_se: ``(S,)`` the same for the SDE limit.
        diff, diff_se: ``(n,)`` final-time ``mean − limit_mean`` and its standard error.
        slope: the fitted log–log slope of ``|diff|`` against ``ℓ`` (theory: −1; ``nan``
            for a single ``ℓ``).
    """

    ells: np.ndarray
    ts: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    limit_mean: np.ndarray
    limit_se: np.ndarray
    diff: np.ndarray
    diff_se: np.ndarray
    slope: float


def svag_study(make: Callable, ells, limit, y0, *, key, n_paths: int, t1, n_saves: int = 10,
               statistic: Callable | None = None, limit_refine: int = 16) -> SVAGStudy:
    """SVAG statistics against their SDE limit as ``ℓ`` grows.

    Args:
        make: ``ℓ -> dynamics`` (e.g. ``lambda l: so.optimizers.SVAG(prob, lr, B, l)`` or
            ``lambda l: so.optimizers.svag_adam(prob, lr, B, l)``).
        ells: amplifications, e.g. ``[1, 2, 4, 8]``; ``t1`` must be a whole number of
            ``n_saves`` steps of every ``make(ℓ)``.
        limit: the SDE limit (``make(ℓ).limit()`` or :func:`svag_limit_adam`, ...),
            integrated with ``limit_refine`` times ``make(max ℓ)``'s step.
        statistic: ``θ -> scalar`` per path (default: the loss).

    Returns:
        an :class:`SVAGStudy` (``S = n_saves + 1`` saved times).
    """
    ells = [float(x) for x in ells]
    stat = jax.vmap(statistic if statistic is not None else limit.problem.loss)

    def run(dyn, k, dt, sub_key):
        if k % n_saves:
            raise ValueError(f"t1={float(t1):g} is {k} steps, not a multiple of n_saves={n_saves}; adjust t1.")
        ens = simulate(dyn, y0, key=sub_key, n_paths=n_paths, n_steps=k, dt=dt, save_every=k // n_saves)
        vals = np.asarray(jax.vmap(stat, in_axes=1, out_axes=1)(ens.ys))
        return vals.mean(axis=0), vals.std(axis=0, ddof=1) / np.sqrt(n_paths), np.asarray(ens.ts)

    means, ses = [], []
    for i, ell in enumerate(ells):
        dyn = make(ell)
        k = int(round(float(t1) / float(dyn.natural_dt())))
        m, s, ts = run(dyn, k, None, jr.fold_in(key, i))
        means.append(m)
        ses.append(s)
    fine = float(make(max(ells)).natural_dt()) / limit_refine
    lm, ls, _ = run(limit, int(round(float(t1) / fine)), fine, jr.fold_in(key, 10_000))
    means, ses = np.array(means), np.array(ses)
    diff = means[:, -1] - lm[-1]
    slope = power_law_exponent(ells, diff) if len(ells) > 1 else np.nan
    return SVAGStudy(ells=np.array(ells), ts=ts, mean=means, se=ses, limit_mean=lm, limit_se=ls, diff=diff,
                     diff_se=np.sqrt(ses[:, -1] ** 2 + ls[-1] ** 2), slope=float(slope))


register_result(SVAGStudy)


__all__ = [
    "SVAG",
    "SVAGOptax",
    "svag_weights",
    "svag_gradient",
    "svag_rmsprop",
    "svag_adam",
    "svag_limit_rmsprop",
    "svag_limit_adam",
    "svag_study",
    "SVAGStudy",
]
