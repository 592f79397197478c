"""Noise models: the shape D(θ) of the gradient noise, and a factor G with G Gᵀ = D.

A noise model is a value handed to a dynamics (``SGDSDE``, ``NoisyGD``). Each model knows
how to draw ``G z`` for ``z ~ N(0, I_r)`` with as few normals ``r`` as its structure allows:
isotropic noise scales ``d`` normals, a constant covariance is rotated once into its
eigenbasis (and its null space dropped), mini-batch noise uses the ``N`` centred
per-example gradients so that ``G z = Gcᵀ z / √N`` never forms a ``d × d`` matrix.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from ._checks import is_concrete, nonnegative, square_matrix
from ._chunking import sum_examples
from ._problem import Problem


def _psd_factor(m: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """``V √max(λ, 0)``: a factor of the PSD part of a symmetric matrix."""
    lam, vec = jnp.linalg.eigh(0.5 * (m + m.T))
    return vec * jnp.sqrt(jnp.clip(lam, 0.0))


class AbstractNoise(eqx.Module):
    """A gradient-noise model: ``covariance(problem, θ) -> D`` and ``factor(problem, θ) -> G``."""

    @abc.abstractmethod
    def covariance(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, "d d"]:
        """``D(θ)``, the covariance of one example's gradient noise (``B = 1``)."""

    @abc.abstractmethod
    def factor(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, "d r"]:
        """``G(θ)`` with ``G Gᵀ = D(θ)``."""

    @abc.abstractmethod
    def n_normals(self, problem: Problem, dim: int) -> int:
        """Number ``r`` of standard normals one draw of ``G z`` needs."""

    @abc.abstractmethod
    def apply_factor(self, problem: Problem, theta: Float[Array, " d"], z: Float[Array, " r"]) -> Float[Array, " d"]:
        """``G(θ) z``, computed without forming more than the model needs."""

    def check(self, problem: Problem, dim: int) -> None:
        """Raise ``ValueError`` when this noise cannot be used with ``problem`` in dimension ``dim``."""


def batch_factor(n_examples: int | None, batch_size: int, replacement: bool) -> float:
    """The factor ``c_B`` in ``Var(g_B) = c_B · D`` for a batch of ``B = batch_size`` out of
    ``N = n_examples``: ``1/B`` with replacement (``B`` i.i.d. indices) and
    ``(N − B)/(B (N − 1))`` for ``B`` distinct examples, the finite-population correction
    of sampling without replacement (e.g. Cochran, *Sampling Techniques*, 1977, §2.5). The
    same factor scales ``Var(H_B)`` of per-example Hessians. ``N = None`` (no data) is
    treated as an infinite population.

    Examples:
        >>> batch_factor(10, 5, True), batch_factor(10, 5, False), batch_factor(10, 10, False)
        (0.2, 0.1111111111111111, 0.0)
    """
    if replacement or n_examples is None:
        return 1.0 / batch_size
    if n_examples == 1:
        return 0.0
    return (n_examples - batch_size) / (batch_size * (n_examples - 1))


def gradient_covariance(noise: AbstractNoise, problem: Problem, theta, batch_size: int, replacement: bool = True):
    """Covariance of a batch gradient: ``Var(g_B) = D(θ)/B``, times ``(N−B)/(N−1)`` without replacement."""
    return batch_factor(problem.n_examples, batch_size, replacement) * noise.covariance(problem, theta)


class IsotropicNoise(AbstractNoise):
    """``D = variance · I``."""

    variance: Float[Array, ""]

    def __init__(self, variance):
        self.variance = nonnegative("variance", variance, finite=True)

    def covariance(self, problem, theta):
        return self.variance * jnp.eye(theta.shape[0], dtype=theta.dtype)

    def factor(self, problem, theta):
        return jnp.sqrt(self.variance) * jnp.eye(theta.shape[0], dtype=theta.dtype)

    def n_normals(self, problem, dim):
        return dim

    def apply_factor(self, problem, theta, z):
        return jnp.sqrt(self.variance) * z


class DiagonalNoise(AbstractNoise):
    """``D = diag(variances)``: independent coordinates with their own variances."""

    variances: Float[Array, " d"]

    def __init__(self, variances):
        v = jnp.asarray(variances, dtype=jnp.result_type(float))
        if v.ndim != 1:
            raise ValueError(f"variances must be a vector (d,), got shape {v.shape}.")
        if is_concrete(v) and not bool(jnp.all(v >= 0) & jnp.all(jnp.isfinite(v))):
            raise ValueError("variances must be finite and >= 0.")
        self.variances = v

    def check(self, problem, dim):
        if self.variances.shape[0] != dim:
            raise ValueError(f"variances has {self.variances.shape[0]} entries but the problem has d={dim}.")

    def covariance(self, problem, theta):
        return jnp.diag(self.variances).astype(theta.dtype)

    def factor(self, problem, theta):
        return jnp.diag(jnp.sqrt(self.variances)).astype(theta.dtype)

    def n_normals(self, problem, dim):
        return dim

    def apply_factor(self, problem, theta, z):
        return jnp.sqrt(self.variances) * z


class ConstantNoise(AbstractNoise):
    """``D`` = a fixed PSD matrix. Stored as its eigen-factor, with the null space dropped,
    so a draw costs ``rank(D)`` normals and one ``(d, r)`` product."""

    cov: Float[Array, "d d"]
    _factor: Float[Array, "d r"]

    def __init__(self, covariance):
        cov = square_matrix("covariance", covariance, psd=True)
        self.cov = cov
        if is_concrete(cov):
            lam, vec = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
            keep = lam > 1e-12 * max(1.0, float(np.abs(lam).max()))
            keep[-1] = True  # at least one column
            fac = vec[:, keep] * np.sqrt(np.clip(lam[keep], 0.0, None))
            self._factor = jnp.asarray(fac, dtype=cov.dtype)
        else:
            self._factor = _psd_factor(cov)

    def check(self, problem, dim):
        if self.cov.shape[0] != dim:
            raise ValueError(f"covariance has shape {self.cov.shape} but the problem has d={dim} parameters.")

    def covariance(self, problem, theta):
        return self.cov.astype(theta.dtype)

    def factor(self, problem, theta):
        return self._factor.astype(theta.dtype)

    def n_normals(self, problem, dim):
        return int(self._factor.shape[1])

    def apply_factor(self, problem, theta, z):
        return self._factor.astype(z.dtype) @ z


def _lanczos_tridiagonal(mv, q0, n_steps: int):
    """``(alpha, beta, Q)`` of ``n_steps`` Lanczos steps from the unit vector ``q0``: the
    tridiagonal ``T`` (``alpha`` on the diagonal, ``beta[:-1]`` off it) and the basis ``Q``
    (rows). The one place this module calls the package's Lanczos, so that it is easy to
    repoint (fixed number of steps, full reorthogonalisation)."""
    from ._curvature import _lanczos

    alpha, beta, Q, _, _ = _lanczos(mv, q0, jr.key(0), n_steps)
    return alpha, beta, Q


def krylov_sqrt(mv, z: Float[Array, " d"], n_steps: int) -> Float[Array, " d"]:
    r"""``√M₊ z`` for a symmetric ``M`` given by products ``mv(v) = M v``, by the Lanczos
    (Krylov) approximation ``f(M) z ≈ ‖z‖ Q_k f(T_k) e₁`` with ``f(x) = √max(x, 0)``
    (Saad 1992; Higham 2008, §13.2).

    ``Q_k`` (``d × k``) and ``T_k`` are ``k = n_steps`` steps of Lanczos from ``z/‖z‖``. The
    result is exact when the Krylov space ``span{z, Mz, …, M^{k−1}z}`` is invariant (``k = d``,
    or ``M`` with ``≤ k`` distinct eigenvalues seen by ``z``); otherwise the truncation error
    is at most twice ``‖z‖`` times the best uniform approximation of ``f`` by a polynomial of
    degree ``k − 1`` on the spectrum, which for the square root (not smooth at 0) decays like
    ``√λmax / k``: converge ``k`` on your problem. Cost: ``k`` products, a ``k × d`` basis.
    """
    d = z.shape[0]
    k = max(1, min(int(n_steps), d))
    nz = jnp.linalg.norm(z)
    q0 = z / jnp.where(nz > 0, nz, 1.0)
    alpha, beta, Q = _lanczos_tridiagonal(mv, q0, k)
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    lam, vec = jnp.linalg.eigh(t)
    f_e1 = vec @ (jnp.sqrt(jnp.clip(lam, 0.0)) * vec[0])
    return nz * (Q.T @ f_e1)


class HessianNoise(AbstractNoise):
    r"""``D = scale · ∇²L(θ)₊``, the PSD part of the Hessian (negative eigenvalues clipped).

    Near a minimum of a negative log-likelihood the mini-batch noise covariance is close to
    the Hessian (Zhu et al. 2019; Xie, Sato & Sugiyama 2021).

    ``method="dense"`` (default): the Hessian is formed from ``d`` HVPs and factored
    exactly (small and medium ``d``). ``method="lanczos"``: a draw ``√(scale·H₊) z`` is the
    Krylov approximation of :func:`krylov_sqrt` with ``n_steps`` Lanczos steps on HVPs
    (``n_steps`` HVPs per draw, O(``n_steps · d``) memory; network scale). It truncates the
    spectrum seen from ``z`` to ``n_steps`` Ritz values, so the draw's covariance is
    ``H₊`` only as ``n_steps → d``; check convergence in ``n_steps``. ``covariance`` and
    ``factor`` are always dense.
    """

    scale: Float[Array, ""]
    method: str = eqx.field(static=True, default="dense")
    n_steps: int = eqx.field(static=True, default=32)

    def __init__(self, scale=1.0, *, method: str = "dense", n_steps: int = 32):
        self.scale = nonnegative("scale", scale, finite=True)
        if method not in ("dense", "lanczos"):
            raise ValueError(f"method must be 'dense' (exact factor) or 'lanczos' (Krylov √H z), got {method!r}.")
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer (Lanczos steps per draw), got {n_steps!r}.")
        self.method, self.n_steps = method, int(n_steps)

    def covariance(self, problem, theta):
        g = self.factor(problem, theta)
        return g @ g.T

    def factor(self, problem, theta):
        return _psd_factor(self.scale * problem.hessian(theta))

    def n_normals(self, problem, dim):
        return dim

    def apply_factor(self, problem, theta, z):
        if self.method == "dense":
            return self.factor(problem, theta) @ z
        return jnp.sqrt(self.scale).astype(z.dtype) * krylov_sqrt(lambda v: problem.hvp(theta, v), z, self.n_steps)


class MinibatchNoise(AbstractNoise):
    """Exact mini-batch noise of a finite sum:
    ``D(θ) = (1/N) Σ ∇fᵢ∇fᵢᵀ − ∇L∇Lᵀ``.

    The factor is the centred per-example gradient matrix ``Gcᵀ/√N`` (``d × N``). A draw
    ``Gcᵀ z/√N`` with ``N`` normals never forms it: ``Gcᵀz = Σᵢ zᵢ∇fᵢ − (Σᵢzᵢ)∇L = Jᵀ(z − z̄)``
    is one vector–Jacobian product of the per-example losses with the centred cotangent
    ``z − z̄`` (:meth:`Problem.per_example_vjp`): about one gradient, O(d) memory, streamed
    in the problem's chunks. ``covariance`` and ``factor`` form the matrices (small
    problems). Dynamics apply the batch factor ``1/B`` (and ``(N−B)/(N−1)`` without
    replacement) on top.
    """

    def check(self, problem, dim):
        problem._need_data("MinibatchNoise")

    def _centred(self, problem, theta):
        g = problem.per_example_grads(theta)
        return g - jnp.mean(g, axis=0)

    def covariance(self, problem, theta):
        gc = self._centred(problem, theta)
        return gc.T @ gc / gc.shape[0]

    def factor(self, problem, theta):
        gc = self._centred(problem, theta)
        return gc.T / jnp.sqrt(gc.shape[0])

    def n_normals(self, problem, dim):
        problem._need_data("MinibatchNoise")
        return problem.n_examples

    def apply_factor(self, problem, theta, z):
        # Gcᵀz = Σᵢ zᵢ∇fᵢ − (Σᵢzᵢ)∇L = Jᵀ(z − z̄): one VJP with a centred cotangent
        n = problem.n_examples
        return problem.per_example_vjp(theta, z - jnp.mean(z)) / jnp.sqrt(n).astype(z.dtype)


class EmpiricalFisherNoise(AbstractNoise):
    """The empirical Fisher ``F(θ) = (1/N) Σ ∇fᵢ∇fᵢᵀ`` (uncentred), the usual stand-in for
    the noise of a log-likelihood loss. ``F = D + ∇L∇Lᵀ``; at a minimum they coincide.
    A draw ``Jᵀz/√N`` is one VJP of the per-example losses (no ``N × d`` matrix)."""

    def check(self, problem, dim):
        problem._need_data("EmpiricalFisherNoise")

    def covariance(self, problem, theta):
        g = problem.per_example_grads(theta)
        return g.T @ g / g.shape[0]

    def factor(self, problem, theta):
        g = problem.per_example_grads(theta)
        return g.T / jnp.sqrt(g.shape[0])

    def n_normals(self, problem, dim):
        problem._need_data("EmpiricalFisherNoise")
        return problem.n_examples

    def apply_factor(self, problem, theta, z):
        return problem.per_example_vjp(theta, z) / jnp.sqrt(problem.n_examples).astype(z.dtype)


class ScaledNoise(AbstractNoise):
    """``D = scale · D_base``, optionally evaluated on another problem ``source`` at the
    same ``θ`` (e.g. the mini-batch covariance of a finite-sum version of an analytic
    landscape, used as the noise of the landscape itself)."""

    base: AbstractNoise
    scale: Float[Array, ""]
    source: Problem | None = None

    def __init__(self, base: AbstractNoise, scale=1.0, source: Problem | None = None):
        if not isinstance(base, AbstractNoise):
            raise ValueError(f"base must be a noise model, got {type(base).__name__}.")
        self.base, self.scale, self.source = base, nonnegative("scale", scale, finite=True), source

    def _p(self, problem):
        return problem if self.source is None else self.source

    def check(self, problem, dim):
        self.base.check(self._p(problem), dim)

    def covariance(self, problem, theta):
        return self.scale * self.base.covariance(self._p(problem), theta)

    def factor(self, problem, theta):
        return jnp.sqrt(self.scale) * self.base.factor(self._p(problem), theta)

    def n_normals(self, problem, dim):
        return self.base.n_normals(self._p(problem), dim)

    def apply_factor(self, problem, theta, z):
        return jnp.sqrt(self.scale) * self.base.apply_factor(self._p(problem), theta, z)


__all__ = [
    "AbstractNoise",
    "IsotropicNoise",
    "DiagonalNoise",
    "ConstantNoise",
    "HessianNoise",
    "MinibatchNoise",
    "EmpiricalFisherNoise",
    "ScaledNoise",
    "gradient_covariance",
    "batch_factor",
    "krylov_sqrt",
]


def _output_factor(likelihood: str, z, u):
    """``L(z) u`` with ``L Lᵀ`` the Fisher of the likelihood in output space: categorical
    ``diag(p) − ppᵀ`` (``L = diag(√p) − p√pᵀ``, exact since ``Σp = 1``), Gaussian ``I``."""
    if likelihood == "gaussian":
        return u
    p = jax.nn.softmax(z)
    sp = jnp.sqrt(p)
    return sp * u - p * jnp.dot(sp, u)


class FisherNoise(AbstractNoise):
    """The true Fisher ``F(θ) = (1/N) Σᵢ Jᵢᵀ F(zᵢ) Jᵢ``: the covariance of the gradient of
    ``−log p(y|xᵢ)`` with ``y`` drawn from the model itself (not the data's labels), for
    the outputs ``zᵢ = model_fn(params, exampleᵢ)`` of a ``likelihood="categorical"``
    (logits) or ``"gaussian"`` (unit-variance mean) model; ``params`` is what ``loss_fn``
    receives (``problem.model(θ)``), as for :class:`sde_opt.curvature.Fisher`.

    A draw is exact, with no Monte-Carlo labels: ``ξ = Σᵢ Jᵢᵀ L(zᵢ) uᵢ / √N`` with
    ``L Lᵀ = F(z)`` in output space and ``uᵢ ~ N(0, I_C)``, one vector–Jacobian product of
    the model outputs (about one gradient, O(d) memory, streamed in the problem's chunks),
    ``N·C`` normals. (Sampling labels ``ỹᵢ ~ p(·|xᵢ)`` and drawing ``Σᵢ zᵢ∇ℓ(ỹᵢ)/√N``
    has the same covariance ``F`` but is a Gaussian mixture.) ``covariance`` and ``factor``
    form the matrices (small problems).
    """

    model_fn: Callable = eqx.field(static=True)
    likelihood: str = eqx.field(static=True, default="categorical")

    def __check_init__(self):
        if not callable(self.model_fn):
            raise ValueError(f"model_fn must be callable model_fn(params, example) -> outputs, got {self.model_fn!r}.")
        if self.likelihood not in ("categorical", "gaussian"):
            raise ValueError(f"likelihood must be 'categorical' or 'gaussian', got {self.likelihood!r}.")

    def check(self, problem, dim):
        problem._need_data("FisherNoise")
        self._n_outputs(problem)

    def _outputs(self, problem, theta, data):
        z = jax.vmap(self.model_fn, in_axes=(None, 0))(problem._params(theta), data)
        return z.reshape(z.shape[0], -1)

    def _n_outputs(self, problem) -> int:
        if problem.theta0 is None:
            raise ValueError("FisherNoise needs a problem built with params=... (model_fn receives problem.model(θ)).")
        first = jax.tree_util.tree_map(lambda x: x[0], problem.data)
        shape = jax.eval_shape(self.model_fn, problem.model(problem.theta0), first).shape
        if len(shape) > 1 or (self.likelihood == "categorical" and len(shape) != 1):
            raise ValueError(f"FisherNoise's model_fn must return one example's outputs as a vector (C,) of logits "
                             f"(or a scalar mean for 'gaussian'); got shape {shape}.")
        return max(1, int(np.prod(shape)))

    def factor(self, problem, theta):
        z = self._outputs(problem, theta, problem.data)
        jac = jax.jacrev(lambda th: self._outputs(problem, th, problem.data))(theta)  # (N, C, d)
        eye = jnp.eye(z.shape[1], dtype=z.dtype)
        lmat = jax.vmap(lambda zi: jax.vmap(lambda e: _output_factor(self.likelihood, zi, e), out_axes=1)(eye))(z)
        cols = jnp.einsum("ncd,nce->dne", jac, lmat)  # Jᵢᵀ L(zᵢ)
        return cols.reshape(theta.shape[0], -1) / jnp.sqrt(z.shape[0])

    def covariance(self, problem, theta):
        f = self.factor(problem, theta)
        return f @ f.T

    def n_normals(self, problem, dim):
        problem._need_data("FisherNoise")
        return problem.n_examples * self._n_outputs(problem)

    def apply_factor(self, problem, theta, z):
        n = problem.n_examples
        u = z.reshape(n, -1)

        def chunk_sum(chunk, w):
            ex, uc = chunk

            def total(th):
                out = self._outputs(problem, th, ex)
                cot = jax.vmap(lambda zi, ui: _output_factor(self.likelihood, zi, ui))(jax.lax.stop_gradient(out), uc)
                return jnp.sum(w[:, None].astype(out.dtype) * cot * out)

            return jax.grad(total)(theta)

        w = jnp.full((n,), 1.0, z.dtype) / jnp.sqrt(n).astype(z.dtype)
        return sum_examples(chunk_sum, (problem.data, u), w, problem.chunk_size)


class EigenNoise(AbstractNoise):
    """Noise in the top-``k`` eigen-directions only: ``D = Vₖ diag(λₖ)₊ Vₖᵀ`` of the Hessian
    (``of="hessian"``, negative eigenvalues clipped) or of the mini-batch noise covariance
    (``of="noise"``), recomputed at every ``θ`` matrix-free (Lanczos on HVPs,
    :func:`sde_opt.hessian_eigs`; the Gram trick, :func:`sde_opt.noise_eigs`); ``k``
    normals per draw. Lanczos starts from a fixed vector, so a draw is a deterministic
    function of ``θ`` and ``z``."""

    k: int = eqx.field(static=True)
    of: str = eqx.field(static=True, default="hessian")

    def __check_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive int (eigen-directions), got {self.k!r}.")
        if self.of not in ("hessian", "noise"):
            raise ValueError(f"of must be 'hessian' or 'noise', got {self.of!r}.")

    def check(self, problem, dim):
        if self.k > dim:
            raise ValueError(f"k={self.k} exceeds the problem's d={dim} parameters.")
        if self.of == "noise":
            problem._need_data("EigenNoise(of='noise')")

    def _pairs(self, problem, theta):
        from ._curvature import hessian_eigs
        from ._noise_spectrum import noise_eigs

        if self.of == "hessian":
            vals, vecs = hessian_eigs(problem, theta, self.k, key=jr.key(0))
        else:
            vals, vecs = noise_eigs(problem, theta, self.k, key=jr.key(0))
        return jnp.clip(vals, 0.0, None), vecs

    def factor(self, problem, theta):
        vals, vecs = self._pairs(problem, theta)
        return vecs.T * jnp.sqrt(vals)

    def covariance(self, problem, theta):
        f = self.factor(problem, theta)
        return f @ f.T

    def n_normals(self, problem, dim):
        return self.k

    def apply_factor(self, problem, theta, z):
        return self.factor(problem, theta) @ z
