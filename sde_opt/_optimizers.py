"""Optimizers as ODEs and SDEs: heavy-ball momentum, Nesterov, AdaGrad, RMSprop and Adam.

Each continuous model is a value for the engine (:func:`sde_opt.simulate`) and for diffrax
(``model.terms(...)``, :func:`sde_opt.solve_diffrax`). It is parametrised by the
hyperparameters of the discrete optimizer it models, and knows that optimizer:
``model.optimizer()`` is the optax ``GradientTransformation`` and ``model.discrete()`` the
discrete dynamics on the same engine, with the same time unit (``natural_dt``).

The state of a model is one flat vector: ``θ`` followed by the optimizer's buffers
(velocity, second moment, ...); ``position(state)`` returns ``θ``, so ``simulate``'s ``ys``
are always the parameters.

Time scales (``natural_dt`` = SDE time of one optimizer step):

================  =====================================  ===============================
model             continuous equation                    one step of the optimizer
================  =====================================  ===============================
HeavyBall         θ'' + γθ' + ∇L = 0 (+ noise in θ')      √lr,  γ = (1 − β)/√lr
NesterovFlow      θ'' + (r/t)θ' + ∇L = 0                 √lr  (Su, Boyd & Candès 2016)
AdaGradFlow       θ' = −∇L/√S,  S' = ∇L²                 lr²
RMSpropFlow       θ' = −∇L/√v,  v' = c(∇L² − v)          lr,   c = (1 − β)/lr
RMSpropSDE        Malladi et al. 2022, Def. 4.1           lr²,  c = (1 − β)/lr²
AdamFlow          bias-corrected Adam ODE                 lr,   cᵢ = (1 − βᵢ)/lr
AdamSDE           Malladi et al. 2022, Def. 4.4           lr²,  cᵢ = (1 − βᵢ)/lr²
================  =====================================  ===============================

**Coupled noise.** A Gaussian-noise discrete optimizer (:class:`NoisyOptax`) is fed
``g = ∇L − (D/B)^{1/2} z`` with the step's normals ``z``; every SDE here is written with the
sign of ``dW`` that makes one optimizer step, in law and path by path, the Euler–Maruyama
step of the SDE driven by ``ΔW = √dt · z`` (the laws are those of the papers: ``W`` and
``−W`` have the same law). :func:`coupled_paths` runs a discrete optimizer and a refined
continuous model on the same Brownian path, so that weak errors can be estimated from path
differences with far less Monte Carlo noise than from independent runs.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_batch, check_optimizer, noise_model, nonnegative, positive, positive_int, unit_interval
from ._dynamics import (
    AbstractContinuous,
    AbstractDynamics,
    AbstractOptax,
    OptaxDynamics,
)
from ._engine import Ensemble, _simulate, check_key, check_start, resolve_dt
from ._integrators import EulerMaruyama, SummedNormals, default_integrator
from ._noise import AbstractNoise, batch_factor
from ._problem import Problem

# ----------------------------------------------------------------------------- checks


# ----------------------------------------------------------------------------- base class


class AbstractOptimizerModel(AbstractContinuous):
    """A continuous model of a discrete optimizer, on a flat state ``(θ, buffers...)``.

    Concrete models define ``optimizer()`` (the optax optimizer they model) and
    ``n_buffers``, the number of buffers after ``θ``: the state is ``θ`` followed by
    ``n_buffers`` blocks of size ``d`` (the last may be shorter, as a global-norm ``v`` is);
    ``discrete()`` builds the matching discrete dynamics.
    """

    n_buffers: eqx.AbstractClassVar[int]

    @abc.abstractmethod
    def optimizer(self) -> optax.GradientTransformation:
        """The discrete optimizer this model describes, as an optax transformation."""

    def _dim(self, n: int) -> int:
        """Parameter dimension ``d`` from the state size ``n``."""
        return n // (1 + self.n_buffers)

    def _blocks(self, y):
        """``(θ, buffer₁, …)`` from the flat state."""
        d = self._dim(y.shape[0])
        cuts = [d * (i + 1) for i in range(self.n_buffers)]
        return tuple(y[a:b] for a, b in zip([0, *cuts], [*cuts, y.shape[0]]))

    def position(self, state):
        return state[: self._dim(state.shape[0])]

    def discrete(self, *, minibatch: bool = False) -> AbstractDynamics:
        """The discrete optimizer on the engine, with this model's time unit.

        * a model without noise: :class:`sde_opt.OptaxDynamics` on full-batch gradients;
        * a noisy model: :class:`NoisyOptax` (Gaussian gradient noise ``D/B``, coupled path
          by path with this model by :func:`coupled_paths`), or with ``minibatch=True`` real
          mini-batches of ``batch_size`` (:class:`sde_opt.OptaxDynamics`).
        """
        opt, dt = self.optimizer(), self.natural_dt()
        noise = getattr(self, "noise", None)
        if noise is None:
            return OptaxDynamics(self.problem, opt, None, lr=dt)
        replacement = getattr(self, "replacement", True)
        if minibatch:
            return OptaxDynamics(self.problem, opt, self.batch_size, replacement, lr=dt)
        return NoisyOptax(self.problem, opt, self.batch_size, noise, dt=dt, replacement=replacement)

    # noise helpers (only for models with a ``noise`` field) ----------------------------
    def _noise_scale(self):
        return batch_factor(self.problem.n_examples, self.batch_size, self.replacement)

    def _noise_apply(self, theta, z):
        """``(D/B)^{1/2} z`` (times the without-replacement factor)."""
        return jnp.sqrt(self._noise_scale()) * self.noise.apply_factor(self.problem, theta, z)

    def _noise_diag(self, theta):
        """``diag(D/B)``: the per-coordinate variance of the batch gradient."""
        fac = self.noise.factor(self.problem, theta)
        return self._noise_scale() * jnp.sum(fac**2, axis=1)

    def _noise_normals(self, d: int) -> int:
        noise = getattr(self, "noise", None)
        return 0 if noise is None else self.noise.n_normals(self.problem, d)


def _zeros_diffusion(y):
    return jnp.zeros_like(y)


# ----------------------------------------------------------------------------- momentum


class HeavyBall(AbstractOptimizerModel):
    """Heavy-ball momentum as a damped second-order ODE, or an underdamped SDE with
    mini-batch noise (Polyak 1964; Qian 1999; Kovachki & Stuart 2021).

    The discrete method is ``optax.sgd(lr, momentum=β)``: ``m ← β m + g``, ``θ ← θ − lr·m``.
    With the step ``h = √lr`` as time unit and the velocity ``v = −h·m`` it reads
    ``v ← (1 − γh) v − h g``, ``θ ← θ + h v`` (semi-implicit Euler), with friction
    ``γ = (1 − β)/√lr``, so as ``lr → 0`` at fixed ``γ`` it follows

        dθ = v dt,   dv = −(γ v + ∇L(θ)) dt + √h (D(θ)/B)^{1/2} dW,

    (without ``noise``: the ODE ``θ'' + γθ' + ∇L = 0``). The noise is ``h²·D/B`` per step
    of length ``h``; its stationary temperature ``h/(2γB) = lr/(2(1 − β)B)`` is the usual
    SGD-with-momentum temperature. Weak (and, without noise, global) error O(h) = O(√lr).

    State: ``(θ, v)``, shape ``(2d,)``, starting at rest (``v = 0``, as optax does).

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 10.0])))
        >>> hb = so.optimizers.HeavyBall(prob, lr=0.01, momentum=0.9)     # h = 0.1, γ = 1
        >>> ens = so.simulate(hb, jnp.ones(2), key=jr.key(0), n_paths=1, n_steps=50)
        >>> ens.ys.shape
        (1, 51, 2)
    """

    problem: Problem
    lr: Float[Array, ""]
    momentum: Float[Array, ""]
    batch_size: int | None = eqx.field(static=True)
    noise: AbstractNoise | None
    replacement: bool = eqx.field(static=True)

    n_buffers: ClassVar[int] = 1

    def __init__(self, problem: Problem, lr, momentum=0.9, batch_size=None, noise=None, *, replacement=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.momentum = unit_interval("momentum", momentum)
        self.noise, self.batch_size = noise_model(problem, noise, batch_size, required=False, who="HeavyBall")
        self.replacement = bool(replacement)

    @classmethod
    def from_friction(cls, problem: Problem, step, friction, batch_size=None, noise=None, *, replacement=True):
        """The model with time step ``h`` and friction ``γ``: ``lr = h²``, ``β = 1 − γh``."""
        return cls(problem, step**2, 1.0 - friction * step, batch_size, noise, replacement=replacement)

    @property
    def friction(self):
        """``γ = (1 − β)/√lr``."""
        return (1.0 - self.momentum) / jnp.sqrt(self.lr)

    def natural_dt(self):
        return jnp.sqrt(self.lr)

    def optimizer(self):
        return optax.sgd(self.lr, momentum=self.momentum)

    def init(self, theta0):
        return jnp.concatenate([theta0, jnp.zeros_like(theta0)])

    def drift(self, t, y):
        theta, v = self._blocks(y)
        return jnp.concatenate([v, -self.friction * v - self.problem.grad(theta)])

    def diffusion_apply(self, t, y, z):
        d = self._dim(y.shape[0])
        if self.noise is None:
            return _zeros_diffusion(y)
        kick = jnp.sqrt(jnp.sqrt(self.lr)) * self._noise_apply(y[:d], z)
        return jnp.concatenate([jnp.zeros((d,), y.dtype), kick])

    def n_normals(self, dim):
        return self._noise_normals(self._dim(dim))


class NesterovFlow(AbstractOptimizerModel):
    """The ODE of Nesterov's accelerated gradient (Su, Boyd & Candès 2016):

        θ'' + (r/t) θ' + ∇L(θ) = 0,   θ(0) = θ₀,  θ'(0) = 0,   (r = 3 for Nesterov's scheme)

    the limit of :func:`nesterov_sbc` (momentum ``(k − 1)/(k + r − 1)``) with step
    ``s = lr`` and time ``t = k√s``. At ``t = 0`` the friction term is replaced by its limit
    (``θ'' = −∇L/(1 + r)``). Global error O(√lr).

    State: ``(θ, θ')``, shape ``(2d,)``.
    """

    problem: Problem
    lr: Float[Array, ""]
    r: Float[Array, ""]

    n_buffers: ClassVar[int] = 1

    def __init__(self, problem: Problem, lr, r=3.0):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.r = positive("r", r)

    def natural_dt(self):
        return jnp.sqrt(self.lr)

    def optimizer(self):
        return nesterov_sbc(self.lr, self.r)

    def init(self, theta0):
        return jnp.concatenate([theta0, jnp.zeros_like(theta0)])

    def drift(self, t, y):
        theta, v = self._blocks(y)
        g = self.problem.grad(theta)
        t = jnp.asarray(t, y.dtype)
        safe_t = jnp.where(t > 0, t, 1.0)
        acc = jnp.where(t > 0, -(self.r / safe_t) * v - g, -g / (1.0 + self.r))
        return jnp.concatenate([v, acc])

    def diffusion_apply(self, t, y, z):
        return _zeros_diffusion(y)

    def n_normals(self, dim):
        return 0


class _SBCState(NamedTuple):
    count: Array
    x_prev: optax.Params


def nesterov_sbc(lr, r=3.0) -> optax.GradientTransformation:
    """Nesterov's accelerated gradient for convex functions, in the form of Su, Boyd &
    Candès (2016), eq. (3) with ``(k − 1)/(k + 2)`` generalised to ``(k − 1)/(k + r − 1)``:

        x_k = y_{k−1} − lr·∇L(y_{k−1}),   y_k = x_k + (k − 1)/(k + r − 1) · (x_k − x_{k−1}).

    The optimizer's parameters are the look-ahead points ``y_k`` (where gradients are
    taken); ``x_k`` is kept in the state. Needs ``params`` in ``update``.
    """
    lr = positive("lr", lr)
    r = positive("r", r)

    def init_fn(params):
        return _SBCState(count=jnp.zeros([], jnp.int32), x_prev=params)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("nesterov_sbc needs params: call update(grads, state, params).")
        k = (state.count + 1).astype(lr.dtype)
        mu = (k - 1.0) / (k + r - 1.0)
        x_new = jax.tree.map(lambda p, g: p - lr * g, params, updates)
        y_new = jax.tree.map(lambda x, xp: x + mu * (x - xp), x_new, state.x_prev)
        out = jax.tree.map(lambda y, p: y - p, y_new, params)
        return out, _SBCState(count=state.count + 1, x_prev=x_new)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- adaptive flows


class AdaGradFlow(AbstractOptimizerModel):
    """The AdaGrad flow: with the accumulator ``S = lr²·G`` (``G = G₀ + Σ gₖ²``) and time
    ``t = k·lr²``, ``optax.adagrad(lr, G₀, eps)`` is an Euler scheme (accumulator updated
    first) for

        θ' = −∇L / √(S + lr²·eps),   S' = ∇L ⊙ ∇L,   S(0) = lr²·G₀,

    per coordinate (Duchi, Hazan & Singer 2011; the continuous-time view of Ward, Wu &
    Bottou 2019). The ODE depends on ``lr`` only through ``S(0)`` and ``lr²·eps``; to
    converge to one fixed ODE as ``lr → 0`` keep ``S₀ = lr²·G₀`` fixed
    (:meth:`from_accumulator`). Global error O(lr²) = O(dt).

    State: ``(θ, S)``, shape ``(2d,)``.
    """

    problem: Problem
    lr: Float[Array, ""]
    initial_accumulator_value: Float[Array, ""]
    eps: Float[Array, ""]

    n_buffers: ClassVar[int] = 1

    def __init__(self, problem: Problem, lr, initial_accumulator_value=0.1, eps=1e-7):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.initial_accumulator_value = positive("initial_accumulator_value", initial_accumulator_value)
        self.eps = nonnegative("eps", eps)

    @classmethod
    def from_accumulator(cls, problem: Problem, lr, s0, eps0=0.0):
        """The discretisation with step ``lr`` of the ODE with ``S(0) = s0`` and
        ``lr²·eps = eps0``."""
        lr = positive("lr", lr)
        return cls(problem, lr, s0 / lr**2, eps0 / lr**2)

    def natural_dt(self):
        return self.lr**2

    def optimizer(self):
        return optax.adagrad(self.lr, self.initial_accumulator_value, self.eps)

    def init(self, theta0):
        s0 = self.lr**2 * self.initial_accumulator_value
        return jnp.concatenate([theta0, jnp.full_like(theta0, s0)])

    def drift(self, t, y):
        theta, s = self._blocks(y)
        g = self.problem.grad(theta)
        return jnp.concatenate([-g / jnp.sqrt(s + self.lr**2 * self.eps), g * g])

    def diffusion_apply(self, t, y, z):
        return _zeros_diffusion(y)

    def n_normals(self, dim):
        return 0


def _rms_denominator(v, eps, eps_in_sqrt: bool):
    return jnp.sqrt(v + eps) if eps_in_sqrt else jnp.sqrt(v) + eps


class _AbstractRMSprop(AbstractOptimizerModel):
    """What the RMSprop flow and SDE share: the optax optimizer they model and the state
    ``(θ, v)``, with ``v`` per coordinate or one number (``per_coordinate=False``)."""

    lr: eqx.AbstractVar[Float[Array, ""]]
    decay: eqx.AbstractVar[Float[Array, ""]]
    eps: eqx.AbstractVar[Float[Array, ""]]
    initial_scale: eqx.AbstractVar[Float[Array, ""]]
    eps_in_sqrt: eqx.AbstractVar[bool]
    per_coordinate: eqx.AbstractVar[bool]
    n_buffers: ClassVar[int] = 1

    def optimizer(self):
        maker = optax.rmsprop if self.per_coordinate else global_rmsprop
        return maker(self.lr, self.decay, self.eps, initial_scale=self.initial_scale, eps_in_sqrt=self.eps_in_sqrt)

    def _dim(self, n):
        return n // 2 if self.per_coordinate else n - 1

    def init(self, theta0):
        v0 = jnp.full((theta0.shape[0] if self.per_coordinate else 1,), self.initial_scale, theta0.dtype)
        return jnp.concatenate([theta0, v0])

    def _split(self, y):
        """``(θ, v)`` from the flat state, and ``√(v + eps)`` (or ``√v + eps``)."""
        theta, v = self._blocks(y)
        return theta, v, _rms_denominator(v, self.eps, self.eps_in_sqrt)


class RMSpropFlow(_AbstractRMSprop):
    """The RMSprop flow: step-size control of gradient flow. With time ``t = k·lr`` and
    ``c = (1 − β)/lr`` held fixed, ``optax.rmsprop(lr, decay=β, eps, initial_scale=v₀)``
    is an Euler scheme for

        θ' = −∇L / √(v + eps),   v' = c (∇L ⊙ ∇L − v),   v(0) = v₀,

    (``eps`` outside the root with ``eps_in_sqrt=False``, as in optax). With
    ``per_coordinate=False`` ``v`` is one number tracking ``‖∇L‖²``, so the step is
    controlled by the global gradient norm (``‖lr·θ'‖ ≲ lr``); its discrete counterpart is
    :func:`global_rmsprop`. Global error O(lr) when ``v₀ > 0``; starting from ``v₀ = 0``
    (optax's default) the first steps are sign-like jumps and the error is O(√lr).

    State: ``(θ, v)``, shape ``(2d,)`` or ``(d + 1,)``.
    """

    problem: Problem
    lr: Float[Array, ""]
    decay: Float[Array, ""]
    eps: Float[Array, ""]
    initial_scale: Float[Array, ""]
    eps_in_sqrt: bool = eqx.field(static=True)
    per_coordinate: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, decay=0.9, eps=1e-8, *, initial_scale=0.0, eps_in_sqrt=True,
                 per_coordinate=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.decay = unit_interval("decay", decay)
        self.eps = nonnegative("eps", eps)
        self.initial_scale = nonnegative("initial_scale", initial_scale)
        self.eps_in_sqrt = bool(eps_in_sqrt)
        self.per_coordinate = bool(per_coordinate)

    @property
    def rate(self):
        """``c = (1 − β)/lr``, the inverse memory of ``v`` in flow time."""
        return (1.0 - self.decay) / self.lr

    def natural_dt(self):
        return self.lr

    def drift(self, t, y):
        theta, v, den = self._split(y)
        g = self.problem.grad(theta)
        target = g * g if self.per_coordinate else jnp.sum(g * g, keepdims=True)
        return jnp.concatenate([-g / den, self.rate * (target - v)])

    def diffusion_apply(self, t, y, z):
        return _zeros_diffusion(y)

    def n_normals(self, dim):
        return 0


class RMSpropSDE(_AbstractRMSprop):
    """The RMSprop SDE of Malladi, Lyu, Panigrahi & Arora (2022), Definition 4.1, in the
    optimizer's own units. With mini-batch gradient covariance ``Σ_B = D/B``, time
    ``t = k·lr²`` and ``c = (1 − β)/lr²``,

        dθ = −(1/(lr·√(v + eps))) ⊙ (∇L dt − lr·Σ_B^{1/2} dW),   dv = c (diag Σ_B − v) dt.

    In the paper's variables ``u = v/σ²``, ``σ₀ = σ·lr``, ``ε₀ = eps·lr`` (``Σ_B = σ²Σ``) this
    is ``dθ = −P⁻¹(∇L dt + σ₀Σ^{1/2} dW)``, ``du = c(diag Σ − u) dt``,
    ``P = σ₀ diag(u)^{1/2} + ε₀``. The SDE is the limit ``lr → 0`` with ``σ₀``, ``c`` and
    ``ε₀`` fixed, i.e. gradient noise ``Σ_B ∝ 1/lr²``: the noise-dominated regime, where
    ``∇L²`` is negligible next to ``diag Σ_B`` in ``v``. Malladi et al. prove weak order 1 in
    ``lr`` (O(√dt)) for general noise; the third moments of non-Gaussian noise are what
    limit it: with Gaussian noise (:class:`NoisyOptax`) the error is O(lr²) = O(dt).

    ``per_coordinate=False`` models :func:`global_rmsprop` (``v`` tracks ``tr Σ_B``).
    State: ``(θ, v)``, shape ``(2d,)`` or ``(d + 1,)``.
    """

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    noise: AbstractNoise
    decay: Float[Array, ""]
    eps: Float[Array, ""]
    initial_scale: Float[Array, ""]
    eps_in_sqrt: bool = eqx.field(static=True)
    per_coordinate: bool = eqx.field(static=True)
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size, noise: AbstractNoise, decay=0.999, eps=1e-8, *,
                 initial_scale=0.0, eps_in_sqrt=True, per_coordinate=True, replacement=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.noise, self.batch_size = noise_model(problem, noise, batch_size, required=True, who="RMSpropSDE")
        self.decay = unit_interval("decay", decay)
        self.eps = nonnegative("eps", eps)
        self.initial_scale = nonnegative("initial_scale", initial_scale)
        self.eps_in_sqrt = bool(eps_in_sqrt)
        self.per_coordinate = bool(per_coordinate)
        self.replacement = bool(replacement)

    @property
    def rate(self):
        """``c = (1 − β)/lr²``."""
        return (1.0 - self.decay) / self.lr**2

    def natural_dt(self):
        return self.lr**2

    def drift(self, t, y):
        theta, v, den = self._split(y)
        g = self.problem.grad(theta)
        diag = self._noise_diag(theta)
        target = diag if self.per_coordinate else jnp.sum(diag, keepdims=True)
        return jnp.concatenate([-g / (self.lr * den), self.rate * (target - v)])

    def diffusion_apply(self, t, y, z):
        theta, v, den = self._split(y)
        return jnp.concatenate([self._noise_apply(theta, z) / den, jnp.zeros_like(v)])

    def n_normals(self, dim):
        return self._noise_normals(self._dim(dim))


def _bias(rate, t, dtype):
    """``γ(t) = 1 − exp(−rate·t)``."""
    return -jnp.expm1(-rate * jnp.asarray(t, dtype))


def _corrected(bias_correction: bool, t, m, v, c1, c2, m_limit, v_limit):
    """Bias-corrected moments ``m/γ₁(t)``, ``v/γ₂(t)``, with their limits at ``t = 0``."""
    if not bias_correction:
        return m, v
    started = jnp.asarray(t) > 0
    g1, g2 = _bias(c1, t, m.dtype), _bias(c2, t, m.dtype)
    m_hat = jnp.where(started, m / jnp.where(started, g1, 1.0), m_limit)
    v_hat = jnp.where(started, v / jnp.where(started, g2, 1.0), v_limit)
    return m_hat, v_hat


class ScaleByMomentsState(NamedTuple):
    count: Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_moments(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, *, initial_scale=0.0,
                     bias_correction: bool = True) -> optax.GradientTransformation:
    """Adam's rescaling ``m̂/(√(v̂ + eps_root) + eps)`` with the second moment started at
    ``initial_scale`` and optional bias correction; with the defaults it equals
    ``optax.scale_by_adam``."""

    def init_fn(params):
        return ScaleByMomentsState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(lambda p: jnp.full_like(p, initial_scale), params),
        )

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
        count = state.count + 1
        if bias_correction:
            k = count.astype(jnp.result_type(float))
            mu_hat = jax.tree.map(lambda m: m / (1.0 - b1**k), mu)
            nu_hat = jax.tree.map(lambda v: v / (1.0 - b2**k), nu)
        else:
            mu_hat, nu_hat = mu, nu
        out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        return out, ScaleByMomentsState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adam_moments(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, *, initial_scale=0.0,
                 bias_correction: bool = True) -> optax.GradientTransformation:
    """Adam; ``optax.adam`` itself with the defaults, else Adam with ``v`` started at
    ``initial_scale`` and/or without bias correction (:func:`scale_by_moments`)."""
    default = bias_correction and not isinstance(initial_scale, jax.core.Tracer) and float(initial_scale) == 0.0
    if default:
        return optax.adam(lr, b1, b2, eps, eps_root)
    return optax.chain(
        scale_by_moments(b1, b2, eps, eps_root, initial_scale=initial_scale, bias_correction=bias_correction),
        optax.scale_by_learning_rate(lr),
    )


class AdamFlow(AbstractOptimizerModel):
    """The deterministic Adam ODE with bias correction (Barakat & Bianchi 2021): with time
    ``t = k·lr`` and ``cᵢ = (1 − βᵢ)/lr`` fixed, ``optax.adam(lr, b1, b2, eps, eps_root)``
    on full-batch gradients is an Euler scheme for

        m' = c₁(∇L − m),  v' = c₂(∇L² − v),
        θ' = −m̂ / (√(v̂ + eps_root) + eps),  m̂ = m/(1 − e^{−c₁t}),  v̂ = v/(1 − e^{−c₂t}),

    from ``m = v = 0``; at ``t = 0`` the bias-corrected moments take their limits
    ``m̂ = ∇L``, ``v̂ = ∇L²``. Global error O(lr). ``bias_correction=False`` and
    ``initial_scale = v₀`` model :func:`adam_moments` with the same options (``m̂ = m``,
    ``v̂ = v``, ``v(0) = v₀``).

    State: ``(θ, m, v)``, shape ``(3d,)``.
    """

    problem: Problem
    lr: Float[Array, ""]
    b1: Float[Array, ""]
    b2: Float[Array, ""]
    eps: Float[Array, ""]
    eps_root: Float[Array, ""]
    initial_scale: Float[Array, ""]
    bias_correction: bool = eqx.field(static=True)

    n_buffers: ClassVar[int] = 2

    def __init__(self, problem: Problem, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, *, initial_scale=0.0,
                 bias_correction=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.b1 = unit_interval("b1", b1)
        self.b2 = unit_interval("b2", b2)
        self.eps = nonnegative("eps", eps)
        self.eps_root = nonnegative("eps_root", eps_root)
        self.initial_scale = nonnegative("initial_scale", initial_scale)
        self.bias_correction = bool(bias_correction)

    def natural_dt(self):
        return self.lr

    def optimizer(self):
        return adam_moments(self.lr, self.b1, self.b2, self.eps, self.eps_root, initial_scale=self.initial_scale,
                            bias_correction=self.bias_correction)

    def init(self, theta0):
        return jnp.concatenate([theta0, jnp.zeros_like(theta0), jnp.full_like(theta0, self.initial_scale)])

    def drift(self, t, y):
        theta, m, v = self._blocks(y)
        g = self.problem.grad(theta)
        c1, c2 = (1.0 - self.b1) / self.lr, (1.0 - self.b2) / self.lr
        m_hat, v_hat = _corrected(self.bias_correction, t, m, v, c1, c2, g, g * g)
        step = -m_hat / (jnp.sqrt(v_hat + self.eps_root) + self.eps)
        return jnp.concatenate([step, c1 * (g - m), c2 * (g * g - v)])

    def diffusion_apply(self, t, y, z):
        return _zeros_diffusion(y)

    def n_normals(self, dim):
        return 0


class AdamSDE(AbstractOptimizerModel):
    """The Adam SDE of Malladi, Lyu, Panigrahi & Arora (2022), Definition 4.4, in the
    optimizer's own units. With ``Σ_B = D/B``, time ``t = k·lr²``, ``cᵢ = (1 − βᵢ)/lr²``,

        dm = c₁(∇L − m) dt − c₁·lr·Σ_B^{1/2} dW,     dv = c₂(diag Σ_B − v) dt,
        dθ = −(1/lr) · m̂ / (√v̂ + eps) dt,   m̂ = m/γ₁(t),  v̂ = v/γ₂(t),  γᵢ = 1 − e^{−cᵢt}

    (the paper's ``dθ = −(√γ₂/γ₁) P⁻¹ m dt``, ``P = σ₀ diag(u)^{1/2} + ε₀√γ₂`` with
    ``u = v/σ²``). At ``t = 0`` the bias-corrected moments take their limits ``m̂ = ∇L`` and
    ``v̂ = diag Σ_B``. Same regime and orders as :class:`RMSpropSDE`, except for the start:
    with bias correction the first ``~1/(1 − β₁)`` steps of Adam divide an average of a few
    noisy gradients by the root of an average of their squares (self-normalised, not
    Gaussian), and the weak error picks up an initial-layer term that decays only like
    ``dt·log²(1/dt)`` (measured slopes ≈ 0.2–0.5 at practical ``dt``). Started warm
    (``bias_correction=False``, ``initial_scale = v₀ > 0``, discrete counterpart
    :func:`adam_moments` with the same options) the error is O(dt) with Gaussian noise.

    State: ``(θ, m, v)``, shape ``(3d,)``.
    """

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    noise: AbstractNoise
    b1: Float[Array, ""]
    b2: Float[Array, ""]
    eps: Float[Array, ""]
    initial_scale: Float[Array, ""]
    bias_correction: bool = eqx.field(static=True)
    replacement: bool = eqx.field(static=True)

    n_buffers: ClassVar[int] = 2

    def __init__(self, problem: Problem, lr, batch_size, noise: AbstractNoise, b1=0.9, b2=0.999, eps=1e-8, *,
                 initial_scale=0.0, bias_correction=True, replacement=True):
        self.problem = problem
        self.lr = positive("lr", lr)
        self.noise, self.batch_size = noise_model(problem, noise, batch_size, required=True, who="AdamSDE")
        self.b1 = unit_interval("b1", b1)
        self.b2 = unit_interval("b2", b2)
        self.eps = nonnegative("eps", eps)
        self.initial_scale = nonnegative("initial_scale", initial_scale)
        self.bias_correction = bool(bias_correction)
        self.replacement = bool(replacement)

    def natural_dt(self):
        return self.lr**2

    def optimizer(self):
        return adam_moments(self.lr, self.b1, self.b2, self.eps, initial_scale=self.initial_scale,
                            bias_correction=self.bias_correction)

    def init(self, theta0):
        return jnp.concatenate([theta0, jnp.zeros_like(theta0), jnp.full_like(theta0, self.initial_scale)])

    def _rates(self):
        return (1.0 - self.b1) / self.lr**2, (1.0 - self.b2) / self.lr**2

    def drift(self, t, y):
        theta, m, v = self._blocks(y)
        g = self.problem.grad(theta)
        diag = self._noise_diag(theta)
        c1, c2 = self._rates()
        m_hat, v_hat = _corrected(self.bias_correction, t, m, v, c1, c2, g, diag)
        step = -m_hat / (self.lr * (jnp.sqrt(v_hat) + self.eps))
        return jnp.concatenate([step, c1 * (g - m), c2 * (diag - v)])

    def diffusion_apply(self, t, y, z):
        d = self._dim(y.shape[0])
        c1, _ = self._rates()
        kick = -c1 * self.lr * self._noise_apply(y[:d], z)
        zero = jnp.zeros((d,), y.dtype)
        return jnp.concatenate([zero, kick, zero])

    def n_normals(self, dim):
        return self._noise_normals(self._dim(dim))


# ----------------------------------------------------------------------------- global-norm RMSprop


class ScaleByGlobalRmsState(NamedTuple):
    nu: Array


def scale_by_global_rms(decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt: bool = True) -> optax.GradientTransformation:
    """Scale updates by the root of an exponential moving average of the squared global
    norm ``‖g‖²`` (one number for all parameters): RMSprop controlled by the global norm."""

    def init_fn(params):
        leaves = jax.tree.leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.result_type(float)
        return ScaleByGlobalRmsState(nu=jnp.asarray(initial_scale, dtype))

    def update_fn(updates, state, params=None):
        del params
        sq = sum(jnp.sum(jnp.square(u)) for u in jax.tree.leaves(updates))
        nu = decay * state.nu + (1.0 - decay) * sq
        scale = jax.lax.rsqrt(nu + eps) if eps_in_sqrt else 1.0 / (jnp.sqrt(nu) + eps)
        return jax.tree.map(lambda u: scale * u, updates), ScaleByGlobalRmsState(nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def global_rmsprop(lr, decay=0.9, eps=1e-8, *, initial_scale=0.0, eps_in_sqrt: bool = True) -> optax.GradientTransformation:
    """RMSprop with one step size for all coordinates, set by the global gradient norm:
    ``ν ← βν + (1 − β)‖g‖²``, ``θ ← θ − lr·g/√(ν + eps)``. Continuous model:
    ``RMSpropFlow(..., per_coordinate=False)``."""
    return optax.chain(scale_by_global_rms(decay, eps, initial_scale, eps_in_sqrt), optax.scale_by_learning_rate(lr))


# ----------------------------------------------------------------------------- noisy discrete optimizers


class NoisyOptax(AbstractOptax):
    """Any optax optimizer fed Gaussian mini-batch gradients
    ``g = ∇L(θ) − (D(θ)/B)^{1/2} z``, ``z ~ N(0, I)`` (times ``(N − B)/(N − 1)`` without
    replacement): the optimizer with its noise made Gaussian, as :class:`sde_opt.NoisyGD`
    is for SGD. ``dt`` is the SDE time of one step (``model.natural_dt()``).

    The sign of the noise is chosen so that ``NoisyOptax(p, optax.sgd(lr), B, noise,
    dt=lr)`` is, path by path, the Euler–Maruyama step of ``SGDSDE(p, lr, B, noise)`` with
    the same key; :func:`coupled_paths` extends the coupling to finer continuous steps.
    """

    problem: Problem
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    noise: AbstractNoise
    replacement: bool = eqx.field(static=True)
    dt: Float[Array, ""]

    def __init__(self, problem: Problem, optimizer, batch_size, noise: AbstractNoise, *, dt, replacement=True):
        check_optimizer(optimizer)
        if not isinstance(noise, AbstractNoise):
            raise ValueError(f"noise must be a noise model such as so.HessianNoise(), got {type(noise).__name__}.")
        self.problem = problem
        self.optimizer = optimizer
        self.batch_size = check_batch(problem, batch_size, required=False)
        self.noise = noise
        self.replacement = bool(replacement)
        self.dt = positive("dt", dt)

    def natural_dt(self):
        return self.dt

    def n_normals(self, dim: int) -> int:
        return self.noise.n_normals(self.problem, dim)

    def gradient(self, theta, key):
        z = jr.normal(key, (self.n_normals(theta.shape[0]),), dtype=theta.dtype)
        return self.gradient_normals(theta, z)

    def gradient_normals(self, theta, z):
        """The Gaussian gradient driven by the standard normals ``z`` (``n_normals`` of them)."""
        scale = jnp.sqrt(batch_factor(self.problem.n_examples, self.batch_size, self.replacement))
        return self.problem.grad(theta) - scale * self.noise.apply_factor(self.problem, theta, z)

    def step_normals(self, state, t, z):
        """One step driven by the standard normals ``z`` (``n_normals`` of them)."""
        return self.apply(state, self.gradient_normals(state[0], z))


# ----------------------------------------------------------------------------- coupling


def coupled_paths(
    discrete: AbstractDynamics,
    continuous: AbstractContinuous,
    y0,
    *,
    key: PRNGKeyArray,
    n_paths: int,
    n_steps: int,
    refine: int = 1,
    save_every: int = 1,
    chunk_size: int | None = None,
) -> tuple[Ensemble, Ensemble]:
    """Paths of a discrete optimizer and of a continuous model driven by the same noise.

    The continuous model takes ``refine`` Euler–Maruyama substeps of ``dt/refine`` per
    optimizer step (``dt = discrete.natural_dt()``), with increments ``√(dt/refine)·zᵢ``;
    the optimizer's normals are ``Σᵢ zᵢ/√refine``, the same Brownian increment over the
    step. The difference ``f(θ_disc) − f(θ_cont)`` then estimates the weak error with the
    variance of the (small) strong error instead of that of ``f``. For an ODE (no noise)
    the discrete dynamics runs as is and ``refine`` just refines the Euler reference.

    The discrete side needs ``step_normals`` (:class:`NoisyOptax`) when the model is noisy.
    Both runs are the engine's (:func:`sde_opt.simulate`'s kernel) with the same key: the
    model with the integrator ``so.EulerMaruyama(substeps=refine)``, the optimizer with
    ``so.SummedNormals(substeps=refine)``. With ``refine=1`` the model's paths are
    ``so.simulate(continuous, ...)``'s and the optimizer's ``so.simulate(discrete, ...)``'s.

    Returns:
        ``(discrete_ensemble, continuous_ensemble)`` on the same time grid.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
        >>> sde = so.optimizers.HeavyBall(prob, 0.01, 0.9, batch_size=1, noise=so.IsotropicNoise(1.0))
        >>> disc, cont = so.optimizers.coupled_paths(sde.discrete(), sde, jnp.ones(2), key=jr.key(0),
        ...                               n_paths=16, n_steps=20, refine=8)
        >>> disc.ys.shape == cont.ys.shape
        True
    """
    if not isinstance(continuous, AbstractContinuous):
        raise ValueError(f"continuous must be a continuous model such as so.SGDSDE, got {type(continuous).__name__}.")
    if not isinstance(discrete, AbstractDynamics):
        raise ValueError(f"discrete must be a dynamics such as so.optimizers.NoisyOptax, got {type(discrete).__name__}.")
    refine = positive_int("refine", refine)
    dt = discrete.natural_dt()
    if dt is None:
        raise ValueError(f"{type(discrete).__name__} has no natural step; coupled_paths needs one.")
    dt = jnp.asarray(dt)
    nat = continuous.natural_dt()
    if nat is not None and abs(float(nat) - float(dt)) > 1e-9 * max(1.0, abs(float(dt))):
        raise ValueError(
            f"the discrete step is dt={float(dt):g} in SDE time but the continuous model's own step is "
            f"{float(nat):g}; build both from the same hyperparameters (e.g. model.discrete())."
        )
    y0 = jnp.asarray(y0)
    theta0 = y0 if y0.ndim == 1 else y0[0]
    d = theta0.shape[0]
    state_size = jax.eval_shape(continuous.init, theta0).shape[0]
    r = continuous.n_normals(state_size)
    if r:
        if not hasattr(discrete, "step_normals"):
            raise ValueError(
                f"{type(discrete).__name__} draws its own noise and cannot be coupled; use a Gaussian-noise "
                "optimizer with step_normals, e.g. model.discrete() or so.optimizers.NoisyOptax(problem, optimizer, ...)."
            )
        r_d = discrete.n_normals(d)
        if r_d != r:
            raise ValueError(f"the discrete dynamics draws {r_d} normals per step but the model {r}; use the same noise.")
        disc_integrator = SummedNormals(substeps=refine)
    else:
        disc_integrator = default_integrator(discrete)
    n_paths = positive_int("n_paths", n_paths)
    n_steps = positive_int("n_steps", n_steps)
    save_every = positive_int("save_every", save_every, upper=n_steps, upper_name="n_steps")
    key = check_key(key)
    kw = dict(key=key, n_steps=n_steps, save_every=save_every, chunk_size=chunk_size)
    disc = _simulate(discrete, check_start(discrete, y0, n_paths), dt=resolve_dt(discrete, None),
                     integrator=disc_integrator, **kw)
    cont = _simulate(continuous, check_start(continuous, y0, n_paths), dt=dt, integrator=EulerMaruyama(refine), **kw)
    return disc, cont

__all__ = [
    "AbstractOptimizerModel",
    "HeavyBall",
    "NesterovFlow",
    "AdaGradFlow",
    "RMSpropFlow",
    "RMSpropSDE",
    "AdamFlow",
    "AdamSDE",
    "NoisyOptax",
    "coupled_paths",
    "nesterov_sbc",
    "global_rmsprop",
    "adam_moments",
    "scale_by_moments",
    "scale_by_global_rms",
]
