"""Dynamics: continuous models (gradient flow, the SGD SDE) and discrete optimizers
(GD, real mini-batch SGD, noisy GD, any optax optimizer) behind one stepping interface.

Every dynamics is a value with

* ``init(θ0) -> state`` and ``position(state) -> θ`` (state is θ itself except for
  optimizers that carry buffers);
* ``step(state, t, dt, key) -> state``: one step of one path, with its own key;
* ``natural_dt()``: the step that makes one step of the model one step of SGD
  (``lr`` for SGD-type dynamics), ``None`` when there is none;
* ``is_discrete``: discrete algorithms only accept their own step.

The engine (:func:`sde_opt.simulate`) steps a batch of paths with an integrator value:
the dynamics' own ``step`` vmapped (discrete algorithms) or Euler–Maruyama (continuous models).
Continuous models also expose ``drift``/``diffusion`` and hand diffrax their ``terms``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_batch, check_optimizer, nonnegative, positive, positive_int
from ._noise import AbstractNoise, batch_factor
from ._problem import Problem


class AbstractDynamics(eqx.Module):
    """Base class of everything the engine can run."""

    problem: eqx.AbstractVar[Problem]
    is_discrete: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def natural_dt(self):
        """The dynamics' own step (``lr`` for SGD-type), or ``None``."""

    @abc.abstractmethod
    def step(self, state, t, dt, key: PRNGKeyArray):
        """One step of one path."""

    def init(self, theta0: Float[Array, " d"]):
        return theta0

    def position(self, state) -> Float[Array, " d"]:
        return state


class AbstractContinuous(AbstractDynamics):
    """A continuous model ``dθ = b(θ) dt + σ(θ) dW``; the engine steps it with an integrator
    (default :class:`sde_opt.EulerMaruyama`), and ``step`` is one Euler–Maruyama step."""

    is_discrete: ClassVar[bool] = False

    @abc.abstractmethod
    def drift(self, t, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """``b(θ)``."""

    @abc.abstractmethod
    def diffusion_apply(self, t, theta, z) -> Float[Array, " d"]:
        """``σ(θ) z``."""

    @abc.abstractmethod
    def n_normals(self, dim: int) -> int:
        """Dimension ``r`` of the Brownian motion (0 for an ODE)."""

    def step(self, state, t, dt, key):
        """One Euler–Maruyama step of one path (:class:`sde_opt.EulerMaruyama`), its normals
        ``normal(key, (r,))``; the engine steps the whole batch with the same numbers."""
        from ._integrators import EulerMaruyama  # the one Euler–Maruyama; it imports this module

        return EulerMaruyama().step_path(self, state, t, dt, key)

    def terms(self, brownian: dfx.AbstractBrownianPath | None = None) -> dfx.AbstractTerm:
        """diffrax terms: ``MultiTerm(ODETerm(b), ControlTerm(σ, W))``, or the ``ODETerm``
        alone for an ODE; pass them to ``dfx.diffeqsolve`` with any solver."""
        ode = dfx.ODETerm(lambda t, y, args: self.drift(t, y))
        if brownian is None:
            return ode

        def vf(t, y, args):
            r = self.n_normals(y.shape[0])
            struct = jax.ShapeDtypeStruct((r,), y.dtype)
            return lx.FunctionLinearOperator(lambda z: self.diffusion_apply(t, y, z), struct)

        return dfx.MultiTerm(ode, dfx.ControlTerm(vf, brownian))


class GradientFlow(AbstractContinuous):
    """``dθ/dt = −∇L(θ)``. GD with step ``lr`` is its explicit Euler method."""

    problem: Problem

    def natural_dt(self):
        return None

    def drift(self, t, theta):
        return -self.problem.grad(theta)

    def diffusion_apply(self, t, theta, z):
        return jnp.zeros_like(theta)

    def n_normals(self, dim):
        return 0


class ModifiedFlow(AbstractContinuous):
    """The modified equation of GD: the flow of ``L + (lr/4)‖∇L‖²`` (implicit gradient
    regularisation, Barrett & Dherin 2021), which GD follows to ``O(lr²)``."""

    problem: Problem
    lr: Float[Array, ""]

    def __init__(self, problem: Problem, lr):
        self.problem = problem
        self.lr = positive("lr", lr)

    def natural_dt(self):
        return None

    def drift(self, t, theta):
        g = self.problem.grad(theta)
        return -g - 0.5 * self.lr * self.problem.hvp(theta, g)

    def diffusion_apply(self, t, theta, z):
        return jnp.zeros_like(theta)

    def n_normals(self, dim):
        return 0


class SGDSDE(AbstractContinuous):
    """The stochastic modified equation of SGD (Li, Tai & E 2017; 2019):

    ``dθ = −∇L dt + √(lr/B · D(θ)) dW``, with SDE time ``t = k · lr`` after ``k`` steps.

    ``order=2`` adds the drift correction ``−(lr/4)∇‖∇L‖² = −(lr/2) ∇²L ∇L``.
    ``replacement=False`` scales the noise by ``(N − B)/(N − 1)`` (distinct examples).
    """

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    noise: AbstractNoise
    order: int = eqx.field(static=True)
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size, noise: AbstractNoise, order: int = 1, *, replacement=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.batch_size = check_batch(problem, batch_size, required=False)
        if not isinstance(noise, AbstractNoise):
            raise ValueError(f"noise must be a noise model such as so.HessianNoise(), got {type(noise).__name__}.")
        self.noise = noise
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}.")
        self.order = order
        self.replacement = bool(replacement)

    def natural_dt(self):
        return self.lr

    def drift(self, t, theta):
        g = self.problem.grad(theta)
        if self.order == 2:
            g = g + 0.5 * self.lr * self.problem.hvp(theta, g)
        return -g

    def _noise_scale(self):
        return jnp.sqrt(self.lr * batch_factor(self.problem.n_examples, self.batch_size, self.replacement))

    def diffusion_apply(self, t, theta, z):
        return self._noise_scale() * self.noise.apply_factor(self.problem, theta, z)

    def n_normals(self, dim):
        return self.noise.n_normals(self.problem, dim)


class AbstractDiscrete(AbstractDynamics):
    """A discrete algorithm: one step per call, at its own learning rate."""

    is_discrete: ClassVar[bool] = True


class GD(AbstractDiscrete):
    """Full-batch gradient descent ``θ ← θ − lr ∇L(θ)``."""

    problem: Problem
    lr: Float[Array, ""]

    def __init__(self, problem: Problem, lr):
        self.problem = problem
        self.lr = positive("lr", lr)

    def natural_dt(self):
        return self.lr

    def step(self, state, t, dt, key):
        return state - self.lr * self.problem.grad(state)


class NoisyGD(AbstractDiscrete):
    """``θ ← θ − lr (∇L + ξ)``, ``ξ ~ N(0, D(θ)/B)``: SGD with its noise made Gaussian.
    One step equals one Euler–Maruyama step of :class:`SGDSDE` with ``dt = lr``."""

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    noise: AbstractNoise
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size, noise: AbstractNoise, *, replacement=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.batch_size = check_batch(problem, batch_size, required=False)
        if not isinstance(noise, AbstractNoise):
            raise ValueError(f"noise must be a noise model such as so.HessianNoise(), got {type(noise).__name__}.")
        self.noise = noise
        self.replacement = bool(replacement)

    def natural_dt(self):
        return self.lr

    def step(self, state, t, dt, key):
        theta = state
        z = jr.normal(key, (self.noise.n_normals(self.problem, theta.shape[0]),), dtype=theta.dtype)
        scale = jnp.sqrt(batch_factor(self.problem.n_examples, self.batch_size, self.replacement))
        xi = scale * self.noise.apply_factor(self.problem, theta, z)
        return theta - self.lr * (self.problem.grad(theta) + xi)


class PerturbedGD(AbstractDiscrete):
    """Perturbed gradient descent (Jin, Ge, Netrapalli, Kakade & Jordan 2017, Algorithm 2):
    when ``‖∇L(θ)‖ ≤ g_thres`` and more than ``t_thres`` steps have passed since the last
    perturbation (``t − t_noise > t_thres``), add ``ξ`` drawn uniformly from the ball of
    radius ``radius``; then take the gradient step ``θ ← θ − lr ∇L(θ)``.

    The path state is ``(θ, t − t_noise − 1)`` (steps since the last perturbation); a path
    may perturb at its first step. Near a strict saddle one perturbation is enough for GD to escape in
    ``≈ log(r/radius)/|λmin|`` (:func:`sde_opt.theory.saddle_escape_time`, ``start="ball"``).
    Jin et al.'s stopping test (no decrease over ``t_thres`` steps) is left to the caller.
    """

    problem: Problem
    lr: Float[Array, ""]
    radius: Float[Array, ""]
    g_thres: Float[Array, ""]
    t_thres: int = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, radius, g_thres, t_thres: int):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.radius = positive("radius", radius)
        self.g_thres = nonnegative("g_thres", g_thres, finite=True)
        self.t_thres = positive_int("t_thres", t_thres)

    def natural_dt(self):
        return self.lr

    def init(self, theta0):
        return theta0, jnp.asarray(self.t_thres, jnp.int32)

    def position(self, state):
        return state[0]

    def step(self, state, t, dt, key):
        theta, since = state
        k_dir, k_rad = jr.split(key)
        z = jr.normal(k_dir, theta.shape, theta.dtype)
        u = jr.uniform(k_rad, (), theta.dtype)
        xi = self.radius * u ** (1.0 / theta.shape[0]) * z / jnp.linalg.norm(z)
        kick = (jnp.linalg.norm(self.problem.grad(theta)) <= self.g_thres) & (since >= self.t_thres)
        theta = jnp.where(kick, theta + xi, theta)
        since = jnp.where(kick, 0, since + 1).astype(jnp.int32)
        return theta - self.lr * self.problem.grad(theta), since


def _sample_batch(key, n: int, batch_size: int, replacement: bool):
    if replacement:
        return jr.randint(key, (batch_size,), 0, n)
    if batch_size == n:
        return jnp.arange(n)
    return jr.choice(key, n, (batch_size,), replace=False)


class SGD(AbstractDiscrete):
    """Real mini-batch SGD: ``θ ← θ − lr · (1/B) Σ_{i∈batch} ∇fᵢ(θ)``.

    ``replacement=True``: ``B`` i.i.d. uniform indices per step; ``False``: ``B`` distinct
    indices per step, drawn afresh and independently each step. For epoch-wise
    reshuffling (the data-loader scheme) use :class:`ShuffledSGD`.
    """

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size, replacement=True):
        problem._need_data("SGD")
        self.problem = problem
        self.lr = positive("lr", lr)
        self.batch_size = check_batch(problem, batch_size, required=True)
        self.replacement = bool(replacement)

    def natural_dt(self):
        return self.lr

    def step(self, state, t, dt, key):
        idx = _sample_batch(key, self.problem.n_examples, self.batch_size, self.replacement)
        return state - self.lr * self.problem.batch_grad(state, idx, dropout_key(key))


class ShuffledSGD(AbstractDiscrete):
    """SGD with epoch-wise reshuffling: each epoch draws one permutation and walks through
    it in ``⌊N/B⌋`` disjoint batches (the remainder is dropped). Steps of one epoch are
    correlated, unlike :class:`SGD`."""

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size):
        problem._need_data("ShuffledSGD")
        self.problem = problem
        self.lr = positive("lr", lr)
        self.batch_size = check_batch(problem, batch_size, required=True)

    def natural_dt(self):
        return self.lr

    def init(self, theta0):
        return theta0, jnp.arange(self.problem.n_examples), jnp.zeros((), jnp.int32)

    def position(self, state):
        return state[0]

    def step(self, state, t, dt, key):
        theta, perm, k = state
        n, b = self.problem.n_examples, self.batch_size
        perm = jnp.where(k == 0, jr.permutation(key, n), perm)
        idx = jax.lax.dynamic_slice(perm, (k * b,), (b,))
        theta = theta - self.lr * self.problem.batch_grad(theta, idx, dropout_key(key))
        return theta, perm, (k + 1) % (n // b)


_NOISE_STREAM = 0x6E6F6973  # fold_in tag of the key an optimizer's own noise draws from
DROPOUT_STREAM = 0x64726F70  # fold_in tag of the key a step's dropout masks draw from


def dropout_key(key):
    """The key of a step's dropout masks (``Problem(..., batch_key=True)``): a stream of the
    step's key apart from the one that draws the batch."""
    return jr.fold_in(key, DROPOUT_STREAM)


class AbstractOptax(AbstractDiscrete):
    """An optax ``GradientTransformation`` as a discrete dynamics: the path state is
    ``(θ, optimizer state)``, ``position`` returns ``θ``, and each step feeds the optimizer
    one gradient draw. Subclasses say how a gradient is drawn (:meth:`gradient`)."""

    optimizer: eqx.AbstractVar[optax.GradientTransformation]

    def init(self, theta0):
        return theta0, self.optimizer.init(theta0)

    def position(self, state):
        return state[0]

    @abc.abstractmethod
    def gradient(self, theta, key):
        """The gradient the optimizer sees at ``theta`` (random through ``key``)."""

    def apply(self, state, g, key=None):
        """One optimizer update of ``state`` with the gradient ``g``. An optimizer with
        extra arguments (any ``optax.chain``) also gets ``noise_key``, derived from the
        step's ``key``: transforms that draw noise (:func:`sde_opt.inject_noise`) use it, so
        every path of an ensemble draws its own; the others ignore it."""
        theta, opt_state = state
        extra = {}
        if key is not None and isinstance(self.optimizer, optax.GradientTransformationExtraArgs):
            extra["noise_key"] = jr.fold_in(key, _NOISE_STREAM)
        updates, opt_state = self.optimizer.update(g, opt_state, theta, **extra)
        return optax.apply_updates(theta, updates), opt_state

    def step(self, state, t, dt, key):
        return self.apply(state, self.gradient(state[0], key), key)


class OptaxDynamics(AbstractOptax):
    """Any optax ``GradientTransformation`` as a discrete dynamics on the engine.

    The optimizer state lives inside the path state; ``position`` returns the parameters.
    Gradients are mini-batch gradients of size ``batch_size`` (``None``: full batch).
    ``lr`` only sets the time unit (``t = k · lr``); the optimizer carries its own rate.
    """

    problem: Problem
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    replacement: bool = eqx.field(static=True)
    lr: Float[Array, ""]

    def __init__(self, problem: Problem, optimizer, batch_size=None, replacement=True, *, lr=1.0):
        check_optimizer(optimizer)
        self.problem = problem
        self.optimizer = optimizer
        self.batch_size = None if batch_size is None else check_batch(problem, batch_size, required=True)
        self.replacement = bool(replacement)
        self.lr = positive("lr", lr)

    def natural_dt(self):
        return self.lr

    def gradient(self, theta, key):
        if self.batch_size is None or self.problem.data is None:
            return self.problem.grad(theta)
        idx = _sample_batch(key, self.problem.n_examples, self.batch_size, self.replacement)
        return self.problem.batch_grad(theta, idx, dropout_key(key))
