"""Curvature, matrix-free: Hessian, Gauss–Newton and Fisher products, Lanczos eigenpairs,
Hutchinson / Hutch++ traces and stochastic Lanczos quadrature (SLQ) spectral densities.

Everything here works from matrix-vector products ``v ↦ M v`` and never forms a ``d × d``
matrix. The pieces are values, composed as in optax or lineax:

* a **curvature** says which matrix (:class:`Hessian`, :class:`GaussNewton`,
  :class:`Fisher`, :class:`EmpiricalFisher`, and ``NoiseCovariance`` for ``D(θ)``);
* :func:`curvature_operator` binds it to a :class:`~sde_opt.Problem`, a point ``θ`` and
  optionally a **parameter group** (one pytree leaf or layer): the operator is then the
  principal block ``Pᵀ M P`` of that group;
* estimators take an operator: :func:`eigs` (Lanczos), :func:`trace`
  (:class:`Hutchinson`, :class:`HutchPlusPlus`) and :func:`spectral_density` (SLQ).

The contract entry points :func:`hessian_eigs`, :func:`hessian_trace` (and
:func:`hessian_density`) are thin wrappers for the Hessian of a problem.

All estimators are jit-compiled with their sizes static and their keys traced, so a second
call with new parameters or a new key never recompiles; they also run under ``jax.vmap``.

References:
    Lanczos with full reorthogonalisation and the residual bound ``|β_j s_{j,i}|``:
    Parlett, *The Symmetric Eigenvalue Problem* (1998), ch. 13. Hutchinson (1989);
    Hutch++: Meyer, Musco, Musco & Woodruff (2021). SLQ: Golub & Meurant (2010);
    Ubaru, Chen & Saad (2017); for neural networks Ghorbani, Krishnan & Xiao (2019) and
    Yao, Gholami, Keutzer & Mahoney (2020, PyHessian).
"""

from __future__ import annotations

import abc
import math
import warnings
import weakref
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import all_finite, check_key, check_operator, is_concrete, n_eigenpairs, positive_int, which_end
from ._chunking import choose_loop, sum_examples
from ._io import register_result
from ._problem import Problem, as_flat



# ---------------------------------------------------------------------------------------
# parameter groups
# ---------------------------------------------------------------------------------------


def _key_name(k) -> str:
    for attr in ("idx", "key", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def parameter_groups(problem: Problem) -> dict[str, tuple[int, int]]:
    """The parameter groups of a problem built with ``params=pytree``: every leaf and every
    subtree, named by its path joined with ``/`` (``"0"``, ``"0/w"``, ``"w"``), mapped to its
    ``(start, size)`` slice of the flat vector. ``""`` is the whole vector.

    Examples:
        >>> import jax.random as jr, sde_opt as so
        >>> prob = so.problems.mlp_digits(key=jr.key(0), hidden=(8,), n_examples=32)
        >>> so.curvature.parameter_groups(prob)["1/w"]
        (530, 80)
    """
    if problem.unravel is None or problem.theta0 is None:
        raise ValueError(
            "parameter groups need a Problem built with params=pytree (e.g. the initial weights), "
            "so that its flat vector can be split into leaves; rebuild it as Problem(loss_fn, data, params=...)."
        )
    tree = problem.unravel(problem.theta0)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    groups: dict[str, tuple[int, int]] = {"": (0, int(problem.theta0.shape[0]))}
    offset = 0
    spans: dict[tuple[str, ...], list[int]] = {}
    for path, leaf in leaves:
        size = int(np.size(leaf))
        names = tuple(_key_name(k) for k in path)
        for depth in range(1, len(names) + 1):
            prefix = names[:depth]
            lo_hi = spans.setdefault(prefix, [offset, offset + size])
            lo_hi[1] = offset + size
        offset += size
    for prefix, (lo, hi) in spans.items():
        groups["/".join(prefix)] = (lo, hi - lo)
    return groups


def _group_name(group) -> str:
    if isinstance(group, str):
        return group.strip("/")
    if isinstance(group, (int, np.integer)):
        return str(int(group))
    if isinstance(group, (tuple, list)):
        return "/".join(str(g) for g in group)
    raise ValueError(f"group must be a name such as '0/w', an int or a tuple of keys, got {type(group).__name__}.")


def resolve_group(problem: Problem, group) -> tuple[int, int] | None:
    """``(start, size)`` of ``group`` in the flat parameters, or ``None`` for all of them."""
    if group is None:
        return None
    groups = parameter_groups(problem)
    name = _group_name(group)
    if name not in groups:
        avail = ", ".join(repr(g) for g in groups if g)
        raise ValueError(
            f"group={group!r} does not exist in this problem's parameters; pass one of {avail} "
            "(see so.curvature.parameter_groups(problem)), or group=None for all parameters."
        )
    return groups[name]


# ---------------------------------------------------------------------------------------
# curvature matrices
# ---------------------------------------------------------------------------------------


class AbstractCurvature(eqx.Module):
    """Which matrix. ``linearise(problem, to_full, u)`` returns the map ``v ↦ M v`` in the
    group coordinates ``u`` (``to_full(u)`` rebuilds the flat parameters), with everything
    that does not depend on ``v`` (the forward pass, the residuals of the linearisation)
    computed once, as a retained autograd graph would be, and reused by every product."""

    needs_data: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def linearise(self, problem: Problem, to_full: Callable, u: Float[Array, " m"]) -> Callable:
        """The product ``v ↦ M v`` at ``u``."""


class Hessian(AbstractCurvature):
    """``∇²L(θ)`` by forward-over-reverse (``jvp`` of ``grad``)."""

    needs_data: ClassVar[bool] = False

    def linearise(self, problem, to_full, u):
        if problem.chunk_size is not None:  # chunk by chunk: memory set by the chunk, not N

            def mv_chunked(v):
                def chunk_hvp(chunk, w):
                    g = jax.grad(lambda x: jnp.vdot(w.astype(x.dtype), problem.chunk_losses(to_full(x), chunk)))
                    return jax.jvp(g, (u,), (v,))[1]

                return problem.stream(chunk_hvp)

            return mv_chunked
        return jax.linearize(jax.grad(lambda w: problem.loss(to_full(w))), u)[1]


def _example_losses(problem: Problem, to_full: Callable):
    return lambda w: jax.vmap(problem.example_loss, in_axes=(None, 0))(to_full(w), problem.data)


def _chunked_jtj(problem: Problem, to_full: Callable, u, v, chunk_size=None, centred: bool = False):
    """``(1/N) Jᵀ(J v)`` streamed over chunks of ``chunk_size`` examples (default: the
    problem's): one JVP and one VJP a chunk, never a chunk's per-example gradients. With
    ``centred``, ``(1/N) Jᵀ(J v) − ḡ(ḡ·v)`` with ``ḡ = Jᵀ1/N = ∇L`` (the noise covariance
    ``D v``): the VJP then takes both cotangents at once, sharing the forward pass."""

    def chunk_mv(chunk, w):
        _, f_jvp = jax.linearize(lambda x: problem.chunk_losses(to_full(x), chunk), u)
        f_vjp = jax.linear_transpose(f_jvp, u)
        s = f_jvp(v)
        w = w.astype(s.dtype)
        if not centred:
            return f_vjp(w * s)[0]
        both = jax.vmap(lambda c: f_vjp(c)[0])(jnp.stack([w * s, w]))
        return both[0], both[1]

    chunk_size = problem.chunk_size if chunk_size is None else chunk_size
    n = problem.n_examples
    out = sum_examples(chunk_mv, problem.data, jnp.full((n,), 1.0 / n, dtype=u.dtype), chunk_size)
    if not centred:
        return out
    jtjv, gbar = out
    return jtjv - gbar * jnp.vdot(gbar, v)


class EmpiricalFisher(AbstractCurvature):
    """The empirical Fisher ``(1/N) Σ ∇fᵢ∇fᵢᵀ`` (uncentred), as ``Jᵀ(J v)/N`` with ``J`` the
    Jacobian of the per-example losses: one linearisation, never an ``N × d`` matrix
    (streamed over the problem's chunks when it has a ``chunk_size``)."""

    needs_data: ClassVar[bool] = True

    def linearise(self, problem, to_full, u):
        if problem.chunk_size is not None:
            return lambda v: _chunked_jtj(problem, to_full, u, v)
        _, f_jvp = jax.linearize(_example_losses(problem, to_full), u)
        f_vjp = jax.linear_transpose(f_jvp, u)

        def mv(v):
            s = f_jvp(v)
            return f_vjp(s / s.shape[0])[0]

        return mv


class GaussNewton(AbstractCurvature):
    """The generalised Gauss–Newton matrix ``(1/N) Σ Jᵢᵀ ∇²ℓ(zᵢ) Jᵢ`` of a loss written as
    ``fᵢ(θ) = output_loss(model_fn(params, exampleᵢ), exampleᵢ)`` (Schraudolph 2002).

    ``model_fn(params, example) -> z`` (outputs, e.g. logits) and
    ``output_loss(z, example) -> scalar``; ``params`` is what the problem's ``loss_fn``
    receives (``problem.model(θ)``). Each product is one ``jvp`` and one ``vjp`` through the
    model and an output-space HVP (chunk by chunk when the problem has a ``chunk_size``).
    """

    model_fn: Callable = eqx.field(static=True)
    output_loss: Callable = eqx.field(static=True)
    needs_data: ClassVar[bool] = True

    def _out_hvp(self, z_i, jv_i, ex):
        return jax.jvp(jax.grad(lambda zz: self.output_loss(zz, ex)), (z_i,), (jv_i,))[1]

    def linearise(self, problem, to_full, u):
        def outputs_of(chunk):
            return lambda w: jax.vmap(self.model_fn, in_axes=(None, 0))(problem._params(to_full(w)), chunk)

        if problem.chunk_size is not None:

            def mv_chunked(v):
                def chunk_mv(chunk, wt):
                    f = outputs_of(chunk)
                    z, f_vjp = jax.vjp(f, u)
                    jv = jax.jvp(f, (u,), (v,))[1]
                    hjv = jax.vmap(self._out_hvp)(z, jv, chunk)
                    scaled = jax.tree_util.tree_map(
                        lambda a: a * wt.astype(a.dtype).reshape((-1,) + (1,) * (a.ndim - 1)), hjv)
                    return f_vjp(scaled)[0]

                return problem.stream(chunk_mv)

            return mv_chunked

        z, f_jvp = jax.linearize(outputs_of(problem.data), u)
        f_vjp = jax.linear_transpose(f_jvp, u)
        n = jax.tree_util.tree_leaves(z)[0].shape[0]

        def mv(v):
            hjv = jax.vmap(self._out_hvp)(z, f_jvp(v), problem.data)
            return f_vjp(jax.tree_util.tree_map(lambda a: a / n, hjv))[0]

        return mv


def _categorical_log_partition(z, example):
    return jax.nn.logsumexp(z)


def _gaussian_log_partition(z, example):
    return 0.5 * jnp.sum(z**2)


# the output losses whose Hessian is the Fisher of the likelihood (label-free)
_LOG_PARTITION = {"categorical": _categorical_log_partition, "gaussian": _gaussian_log_partition}


class Fisher(AbstractCurvature):
    """The true Fisher information ``(1/N) Σ Jᵢᵀ F(zᵢ) Jᵢ`` of a likelihood parametrised by
    the model outputs ``z = model_fn(params, example)``: ``likelihood="categorical"``
    (softmax logits, ``F = diag(p) − ppᵀ``) or ``"gaussian"`` (unit-variance mean,
    ``F = I``). For these exponential families it is the Gauss–Newton matrix of the
    negative log-likelihood, and it needs no labels (Martens 2020, §9)."""

    model_fn: Callable = eqx.field(static=True)
    likelihood: str = eqx.field(static=True, default="categorical")
    needs_data: ClassVar[bool] = True

    def __check_init__(self):
        if self.likelihood not in _LOG_PARTITION:
            raise ValueError(f"likelihood must be one of {sorted(_LOG_PARTITION)}, got {self.likelihood!r}.")

    def linearise(self, problem, to_full, u):
        return GaussNewton(self.model_fn, _LOG_PARTITION[self.likelihood]).linearise(problem, to_full, u)


# ---------------------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------------------


class AbstractOperator(eqx.Module):
    """A symmetric linear operator on ``R^m``: ``linear()`` (the map ``v ↦ M v``, prepared
    once for many products), ``mv(v)``, ``dim`` and ``dtype``."""

    @abc.abstractmethod
    def linear(self) -> Callable:
        """``v ↦ M v``, with the work that does not depend on ``v`` done once."""

    def mv(self, v: Float[Array, " m"]) -> Float[Array, " m"]:
        """One product ``M v`` (estimators call :meth:`linear` once instead)."""
        return self.linear()(v)

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """``m``."""

    @property
    @abc.abstractmethod
    def dtype(self):
        """Floating dtype of the vectors."""


class MatrixOperator(AbstractOperator):
    """A dense symmetric matrix as an operator (for tests and small problems)."""

    matrix: Float[Array, "m m"]

    def __init__(self, matrix):
        m = jnp.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix must be square (m, m), got shape {m.shape}.")
        self.matrix = m

    def linear(self):
        return lambda v: self.matrix @ v

    @property
    def dim(self):
        return int(self.matrix.shape[0])

    @property
    def dtype(self):
        return self.matrix.dtype


class CurvatureOperator(AbstractOperator):
    """``v ↦ M(θ) v`` for a curvature ``M`` of ``problem`` at ``theta``, restricted to the
    parameter group ``[start, start + size)`` (the principal block; others held fixed)."""

    problem: Problem
    theta: Float[Array, " d"]
    curvature: AbstractCurvature
    start: int = eqx.field(static=True)
    size: int = eqx.field(static=True)

    def to_full(self, u: Float[Array, " m"]) -> Float[Array, " d"]:
        """Flat parameters with the group's slice replaced by ``u``."""
        if self.start == 0 and self.size == self.theta.shape[0]:
            return u
        return jax.lax.dynamic_update_slice(self.theta, u.astype(self.theta.dtype), (self.start,))

    def restrict(self, x: Float[Array, " d"]) -> Float[Array, " m"]:
        """The group's slice of a flat vector."""
        return jax.lax.dynamic_slice(x, (self.start,), (self.size,))

    @property
    def point(self) -> Float[Array, " m"]:
        return self.restrict(self.theta)

    def linear(self):
        return self.curvature.linearise(self.problem, self.to_full, self.point)

    @property
    def dim(self):
        return self.size

    @property
    def dtype(self):
        return self.theta.dtype


def curvature_operator(problem: Problem, theta, *, curvature: AbstractCurvature | None = None,
                       group=None) -> CurvatureOperator:
    """Bind a curvature (default :class:`Hessian`) to ``problem`` at flat parameters ``theta``.

    Args:
        problem: the :class:`~sde_opt.Problem`.
        p: flat parameters ``(d,)``.
        curvature: :class:`Hessian` (default), :class:`GaussNewton`, :class:`Fisher`,
            :class:`EmpiricalFisher` or ``so.curvature.NoiseCovariance()``.
        group: restrict to one parameter group (a leaf or layer of ``params``, e.g. ``"0/w"``
            or ``(0, "w")``; see :func:`parameter_groups`). ``None``: all parameters.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 3.0])))
        >>> so.curvature.curvature_operator(prob, jnp.zeros(2)).mv(jnp.ones(2))
        Array([1., 3.], dtype=float32)
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be an so.Problem, got {type(problem).__name__}.")
    curvature = Hessian() if curvature is None else curvature
    if not isinstance(curvature, AbstractCurvature):
        raise ValueError(f"curvature must be a curvature value such as so.curvature.Hessian(), got {type(curvature).__name__}.")
    if curvature.needs_data:
        problem._need_data(type(curvature).__name__)
    theta = check_point(problem, theta)
    span = resolve_group(problem, group)
    start, size = (0, int(theta.shape[0])) if span is None else span
    return CurvatureOperator(problem=problem, theta=theta, curvature=curvature, start=start, size=size)


# problems whose loss was checked to be scalar at a (shape, dtype): problem.check_params traces
# the loss (jax.eval_shape), milliseconds per call, so it runs once per problem and signature
_CHECKED: dict[int, set] = {}


def check_point(problem: Problem, theta, name: str = "theta") -> Float[Array, " d"]:
    """``problem.check_params(theta)``, with its checks of shape, dtype and the loss (a trace,
    milliseconds) done once per problem and (shape, dtype); finite values every call."""
    theta = as_flat(theta, name)
    seen = _CHECKED.get(id(problem))
    sig = (theta.shape, str(theta.dtype))
    if seen is None or sig not in seen:
        theta = problem.check_params(theta, name)
        if seen is None:
            seen = _CHECKED[id(problem)] = set()
            weakref.finalize(problem, _CHECKED.pop, id(problem), None)
        seen.add(sig)
        return theta
    if not all_finite(theta):
        raise ValueError(f"{name} contains non-finite values (nan or inf); start from a finite point.")
    return theta


# ---------------------------------------------------------------------------------------
# Lanczos
# ---------------------------------------------------------------------------------------


_BLOCK = 16  # rows of the Lanczos basis projected out at a time


def _key_offset(key, dtype):
    """A number in ``[0, 1)`` read off the key's bits (no RNG to compile)."""
    data = jr.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return (data.reshape(-1)[-1] % 9973).astype(dtype) / 9973


def _scrambled(seed, n: int, dtype, offset=0.0):
    """A cheap deterministic vector with no structure (a sine hash, uniform-looking in
    ``[−½, ½)``), for Lanczos restarts and inverse-iteration starts: they only need a
    vector in general position, and this avoids compiling a counter-based RNG in the loop."""
    x = (jnp.arange(n, dtype=dtype) + 1) * 12.9898 + (seed + offset) * 78.233
    h = jnp.sin(x) * 43758.5453
    return h - jnp.floor(h) - 0.5


def _project_out(Q, w, j):
    """``w`` minus its projection on the first ``j`` rows of ``Q`` (rows ``>= j`` are zero),
    block by block (block Gram–Schmidt), so the cost grows with ``j``, not with ``len(Q)``."""
    n_blocks = Q.shape[0] // _BLOCK

    def body(b, w):
        qb = jax.lax.dynamic_slice_in_dim(Q, b * _BLOCK, _BLOCK)
        return w - qb.T @ (qb @ w)

    return jax.lax.fori_loop(0, jnp.minimum((j + _BLOCK - 1) // _BLOCK, n_blocks), body, w)


def _orthogonalise(Q, w, j):
    """Full reorthogonalisation of ``w`` against the first ``j`` rows of ``Q``: one pass, and
    a second only when the first removed more than ``1 − 1/√2`` of the norm (the DGKS test;
    "twice is enough", Giraud, Langou & Rozložník 2005)."""
    w1 = _project_out(Q, w, j)
    again = jnp.linalg.norm(w1) < 0.7071 * jnp.linalg.norm(w)
    return jax.lax.cond(again, lambda x: _project_out(Q, x, j), lambda x: x, w1)


def _lanczos_init(v0, n_iter: int, check=None):
    """The loop state ``(i, Q, alpha, beta, done, aux)`` before the first step."""
    n, dtype = v0.shape[0], v0.dtype
    rows = -(-n_iter // _BLOCK) * _BLOCK  # padded to whole blocks; rows >= n_iter stay zero
    Q = jnp.zeros((rows, n), dtype).at[0].set(v0)
    alpha = jnp.zeros((n_iter,), dtype)
    beta = jnp.zeros((n_iter,), dtype)
    if check is None:
        aux0 = None
    else:
        shapes = jax.eval_shape(lambda: check(alpha, beta, jnp.asarray(n_iter)))[1]
        aux0 = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    return jnp.zeros((), jnp.int32), Q, alpha, beta, jnp.zeros((), bool), aux0


def _lanczos_step(mv, carry, n_iter: int, offset, check=None, min_iter: int = 1):
    """One Lanczos step (one product ``mv``): the body of both drivers of :func:`_lanczos`."""
    i, Q, alpha, beta, _, aux = carry
    n, dtype = Q.shape[1], Q.dtype
    eps = float(jnp.finfo(dtype).eps)
    thresh = eps * max(64.0, 4.0 * math.sqrt(n))
    q = Q[i]
    w = mv(q)
    hq = jnp.linalg.norm(w)
    a = jnp.vdot(q, w)
    prev = jnp.maximum(i - 1, 0)
    w = w - a * q - jnp.where(i > 0, beta[prev], 0.0) * Q[prev]
    w = _orthogonalise(Q, w, i + 1)
    b = jnp.linalg.norm(w)
    broke = b <= thresh * hq

    def restart(_):
        z = _scrambled(i + 1, n, dtype, offset)
        z = _project_out(Q, _project_out(Q, z, i + 1), i + 1)  # a random vector: twice is enough
        return z / jnp.linalg.norm(z), jnp.zeros((), dtype)

    q_next, b = jax.lax.cond(broke, restart, lambda _: (w / jnp.where(b > 0, b, 1), b), None)
    Q = Q.at[i + 1].set(jnp.where(i + 1 < n_iter, q_next, 0.0), mode="drop")
    alpha = alpha.at[i].set(a)
    beta = beta.at[i].set(b)
    done = jnp.zeros((), bool)
    if check is not None:
        j = i + 1
        done, aux = jax.lax.cond(j >= min_iter, lambda: check(alpha, beta, j), lambda: (done, aux))
    return i + 1, Q, alpha, beta, done, aux


def _lanczos(mv, v0, key, n_iter: int, check=None, min_iter: int = 1):
    """Lanczos with full reorthogonalisation for ``n_iter`` steps, or until ``check`` says so.

    ``check(alpha, beta, j) -> (done, aux)`` runs after every step ``j >= min_iter``; the
    latest ``aux`` is returned (so the Ritz pairs of the stopping test are reused).

    Returns ``(alpha, beta, Q, j, aux)``: the tridiagonal ``T`` (diagonal ``alpha[:j]``,
    off-diagonal ``beta[:j-1]``; ``beta[j-1]`` is the residual coupling), the orthonormal
    basis ``Q`` (rows ``< j``) and the number of steps ``j``. On breakdown (an invariant
    subspace, e.g. repeated eigenvalues) the next vector restarts from a random direction
    orthogonal to ``Q`` and ``beta`` is 0 there, so ``T`` becomes block diagonal.

    This is the device driver (one ``while_loop``, traceable); :func:`_lanczos_host` runs
    the same step from Python.
    """
    offset = _key_offset(key, v0.dtype)  # makes the restart directions depend on the key

    def cond(carry):
        i, _, _, _, done, _ = carry
        return (i < n_iter) & ~done

    carry = jax.lax.while_loop(cond, lambda c: _lanczos_step(mv, c, n_iter, offset, check, min_iter),
                               _lanczos_init(v0, n_iter, check))
    j, Q, alpha, beta, _, aux = carry
    return alpha, beta, Q[:n_iter], j, aux


@eqx.filter_jit
def _lanczos_host_step(op, carry, n_iter: int, offset, make_check, check_args, min_iter: int):
    check = None if make_check is None else make_check(*check_args)
    return _lanczos_step(op.linear(), carry, n_iter, offset, check, min_iter)


@eqx.filter_jit
def _lanczos_host_init(v0, n_iter: int, make_check, check_args):
    return _lanczos_init(v0, n_iter, None if make_check is None else make_check(*check_args))


def _lanczos_host(op, v0, key, n_iter: int, make_check=None, check_args=(), min_iter: int = 1):
    """:func:`_lanczos` with the loop in Python: each step (one product of ``op``, the
    reorthogonalisation and the stopping test) is one compiled call, so a product never
    runs inside a compiled loop. The same steps and the same numbers as the device driver
    (to rounding: the step compiles alone). ``make_check(*check_args)`` builds ``check``
    (a module-level function and its arguments, so the step compiles once per shape)."""
    offset = _key_offset(key, v0.dtype)
    carry = _lanczos_host_init(v0, n_iter, make_check, check_args)
    while int(carry[0]) < n_iter and not bool(carry[4]):
        carry = _lanczos_host_step(op, carry, n_iter, offset, make_check, check_args, min_iter)
    j, Q, alpha, beta, _, aux = carry
    return alpha, beta, Q[:n_iter], j, aux


def _tridiagonal_eigvecs(diag, off, vals, key=None):
    """Eigenvectors ``(m, k)`` of the symmetric tridiagonal ``(diag, off)`` for the (sorted)
    eigenvalues ``vals``: three steps of inverse iteration (pivoted tridiagonal solves, all
    ``k`` at once), then Gram–Schmidt among eigenvalues closer than ``√eps·‖T‖`` so that
    equal or clustered eigenvalues get orthonormal vectors. No LAPACK eigensolver or QR: on a
    busy CPU their threaded BLAS ran a hundred times slower than this."""
    m, k = diag.shape[0], vals.shape[0]
    eps = jnp.finfo(diag.dtype).eps
    scale = jnp.max(jnp.abs(diag)) + 2 * jnp.max(jnp.abs(off)) + jnp.finfo(diag.dtype).tiny
    shift = vals + 8 * eps * scale
    dl = jnp.broadcast_to(jnp.pad(off, (1, 0)), (k, m))
    du = jnp.broadcast_to(jnp.pad(off, (0, 1)), (k, m))
    d = diag[None, :] - shift[:, None]
    x = jax.vmap(lambda r: _scrambled(r, m, diag.dtype))(jnp.arange(1, k + 1))
    for _ in range(3):
        x = jax.lax.linalg.tridiagonal_solve(dl, d, du, x[..., None], perturb_singular=True)[..., 0]
        x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    if k == 1:
        return x.T
    # clusters: runs of eigenvalues closer than the tolerance share a label
    close = jnp.abs(jnp.diff(vals)) < jnp.sqrt(eps) * scale
    label = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(~close).astype(jnp.int32)])
    idx = jnp.arange(k)

    def gram_schmidt(i, x):
        mask = ((idx < i) & (label == label[i])).astype(x.dtype)[:, None]
        v = x[i]
        for _ in range(2):
            v = v - (x * mask).T @ ((x * mask) @ v)
        return x.at[i].set(v / jnp.linalg.norm(v))

    any_cluster = jnp.any(close)
    x = jax.lax.cond(any_cluster, lambda x: jax.lax.fori_loop(1, k, gram_schmidt, x), lambda x: x, x)
    return x.T


def _ritz(alpha, beta, j, k: int, which: str, key):
    """Top-``k`` (or bottom-``k``) eigenpairs of the active ``j × j`` block of ``T`` and
    their residual norms ``|β_j s_{j,i}|``. Rows ``>= j`` are padded with a diagonal beyond
    the Gershgorin interval so they never enter the selection; eigenvalues come from
    bisection, vectors from inverse iteration (no dense ``eigh``)."""
    m = alpha.shape[0]
    idx = jnp.arange(m)
    active = idx < j
    off = jnp.where(idx[:-1] < j - 1, beta[:-1], 0.0)
    radius = jnp.abs(jnp.concatenate([off, jnp.zeros(1, off.dtype)])) + jnp.abs(
        jnp.concatenate([jnp.zeros(1, off.dtype), off])
    )
    lo = jnp.min(jnp.where(active, alpha - radius, jnp.inf))
    hi = jnp.max(jnp.where(active, alpha + radius, -jnp.inf))
    span = (hi - lo) + jnp.abs(hi) + jnp.abs(lo) + jnp.finfo(alpha.dtype).tiny
    pad = lo - 0.5 * span if which == "largest" else hi + 0.5 * span
    diag = jnp.where(active, alpha, pad)
    if m == 1:
        vals = diag
    else:
        rng = (m - k, m - 1) if which == "largest" else (0, k - 1)
        vals = jsl.eigh_tridiagonal(diag, off, eigvals_only=True, select="i", select_range=rng)
    if which == "largest":
        vals = vals[::-1]
    vecs = jnp.ones((1, 1), diag.dtype) if m == 1 else _tridiagonal_eigvecs(diag, off, vals, key)
    vecs = jnp.where(active[:, None], vecs, 0.0)
    vecs = vecs / jnp.linalg.norm(vecs, axis=0, keepdims=True)
    last = vecs[jnp.maximum(j - 1, 0)]
    resid = jnp.abs(beta[jnp.maximum(j - 1, 0)] * last)
    scale = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    return vals, vecs.T, resid, scale


def _ritz_dense(alpha, beta, k: int, which: str):
    """:func:`_ritz` for a full ``m × m`` tridiagonal ``T`` (a fixed-step run), by one dense
    ``eigh``: computed once after the loop, where the per-step test of the converged mode
    needs bisection; it compiles in a tenth of the time (0.2 s against 3 s on this CPU)."""
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    vals, vecs = jnp.linalg.eigh(t)
    scale = jnp.maximum(jnp.abs(vals[0]), jnp.abs(vals[-1]))
    if which == "largest":
        vals, vecs = vals[::-1], vecs[:, ::-1]
    vals, vecs = vals[:k], vecs[:, :k]
    return vals, vecs.T, jnp.abs(beta[-1] * vecs[-1]), scale


class EigResult(eqx.Module):
    """Eigenpairs from :func:`eigs`.

    Attributes:
        values: ``(k,)`` eigenvalues, in the order asked for (descending for
            ``"largest"``, ascending for ``"smallest"``).
        vectors: ``(k, m)`` unit eigenvectors (rows).
        residuals: ``(k,)`` ``‖M v − λ v‖`` (the Lanczos bound ``|β_j s_{j,i}|``); an
            eigenvalue is within ``residual`` of an exact one, and within
            ``residual²/gap`` when separated from the rest of the spectrum by ``gap``.
        n_iter: Lanczos steps (matrix-vector products) used.
        converged: whether every residual met the tolerance before ``max_iter``.
        alpha, beta: the Lanczos tridiagonal ``T`` (diagonal ``alpha[:n_iter]``,
            off-diagonal ``beta[:n_iter - 1]``): the eigenvalues of its leading ``j × j``
            block are the ``j``-step estimates, see :meth:`history`.
        which: ``"largest"`` or ``"smallest"``.
    """

    values: Float[Array, " k"]
    vectors: Float[Array, "k m"]
    residuals: Float[Array, " k"]
    n_iter: Int[Array, ""]
    converged: Array
    alpha: Float[Array, " n"]
    beta: Float[Array, " n"]
    which: str = eqx.field(static=True, default="largest")

    def history(self) -> np.ndarray:
        """The convergence history, ``(n_iter, k)``: row ``j − 1`` holds the ``k`` wanted
        Ritz values after ``j`` steps (products), in the order of ``values`` (NaN while
        ``j < k``); the last row is ``values`` up to rounding. Computed on the host from
        ``alpha`` and ``beta`` (scipy), so it costs no product: one run gives the accuracy
        after every number of steps (each Ritz value moves monotonically toward its end of
        the spectrum as ``j`` grows, by Cauchy interlacing)."""
        from scipy.linalg import eigvalsh_tridiagonal

        j_max, k = int(self.n_iter), int(self.values.shape[0])
        alpha, beta = np.asarray(self.alpha, np.float64), np.asarray(self.beta, np.float64)
        out = np.full((j_max, k), np.nan)
        for j in range(1, j_max + 1):
            vals = eigvalsh_tridiagonal(alpha[:j], beta[: j - 1]) if j > 1 else alpha[:1]
            vals = vals[::-1] if self.which == "largest" else vals
            out[j - 1, : min(j, k)] = vals[:k]
        return out


def resolve_max_iter(max_iter: int | None, k: int, dim: int) -> int:
    """Lanczos steps: ``min(dim, max(4k, 100))`` by default, never below ``k`` nor above ``dim``."""
    max_iter = max(4 * k, 100) if max_iter is None else positive_int("max_iter", max_iter)
    return min(max(max_iter, k), dim)


def _default_tol(dtype) -> float:
    return float(np.sqrt(np.finfo(dtype).eps))


def _start_vector(key, n, dtype, v0):
    z = jr.normal(key, (n,), dtype)
    z = z / jnp.linalg.norm(z)
    if v0 is None:
        return z
    v0 = jnp.asarray(v0, dtype)
    if v0.ndim == 2:
        v0 = jnp.sum(v0, axis=0)
    v0 = v0 / jnp.maximum(jnp.linalg.norm(v0), jnp.finfo(dtype).tiny)
    v = v0 + 0.1 * z  # a random tenth keeps eigenvalues that are new since the warm start
    return v / jnp.linalg.norm(v)


def _min_iter(k: int) -> int:
    """Lanczos steps before the stopping test may end the run: ``max(2k + 1, 20)``, the Krylov
    dimension scipy's ``eigsh`` uses by default. A small residual only says that a Ritz value
    is near *some* eigenvalue: when the start vector happens to hold little of the top
    eigenvector, a short run converges to the second one. On the digits MLP with d = 2,410
    (λ₁, λ₂ 3.5% apart), allowing a stop from step k + 2 on returned λ₂ (a 3.5% error) for 2
    of 2,000 random starts, from step 12 on for 11 of 10,000, from step 14, 16 or 20 on for
    none of 10,000."""
    return max(2 * k + 1, 20)


def _eigs_check(k: int, which: str, key, tol: float):
    """The converged mode's stopping test: every wanted residual below ``tol · ‖M‖``."""

    def check(alpha, beta, j):
        vals, s, resid, scale = _ritz(alpha, beta, j, k, which, key)
        return jnp.all(resid <= tol * scale) & (j >= k), (vals, s, resid, scale)

    return check


def _eigs_result(alpha, beta, Q, j, aux, k: int, which: str, tol: float, fixed: bool) -> EigResult:
    vals, s, resid, scale = _ritz_dense(alpha, beta, k, which) if fixed else aux
    vecs = s @ Q
    vecs = vecs / jnp.linalg.norm(vecs, axis=1, keepdims=True)
    converged = jnp.all(resid <= tol * scale)
    return EigResult(values=vals, vectors=vecs, residuals=resid, n_iter=j, converged=converged, alpha=alpha,
                     beta=beta, which=which)


def _eigs_kernel(mv, v, k_lanczos, k_ritz, k: int, which: str, n_iter: int, tol: float, fixed: bool,
                 min_iter: int | None = None) -> EigResult:
    """The one Lanczos eigensolver (traceable, no checks), from the unit start ``v``.

    Converged mode (``fixed=False``): until every wanted residual is below ``tol · ‖M‖``,
    after at least ``min_iter`` steps (default :func:`_min_iter`), or ``n_iter`` steps. Fixed-step mode: exactly
    ``n_iter`` steps, no test inside the loop and one dense ``eigh`` of ``T`` at the end
    (:func:`_ritz_dense`): a smaller graph, for a training scan; ``converged`` reports
    whether ``tol`` was met at the end."""
    check = None if fixed else _eigs_check(k, which, k_ritz, tol)
    min_iter = _first_stop(k, n_iter, fixed, min_iter)
    return _eigs_result(*_lanczos(mv, v, k_lanczos, n_iter, check, min_iter), k, which, tol, fixed)


def _first_stop(k: int, n_iter: int, fixed: bool, min_iter: int | None) -> int:
    """The first step after which the stopping test may end a run."""
    if fixed:
        return 1
    return min(n_iter, _min_iter(k) if min_iter is None else max(min_iter, k))


@eqx.filter_jit
def _eigs_jit(op, k: int, key, which: str, max_iter: int, tol: float, v0, fixed: bool = False,
              min_iter: int | None = None):
    k_start, k_lanczos, k_ritz = jr.split(key, 3)
    v = _start_vector(k_start, op.dim, op.dtype, v0)
    return _eigs_kernel(op.linear(), v, k_lanczos, k_ritz, k, which, max_iter, tol, fixed, min_iter)


_eigs_result_jit = eqx.filter_jit(_eigs_result)
_start_vector_jit = eqx.filter_jit(_start_vector)


def _eigs_host(op, k: int, key, which: str, max_iter: int, tol: float, v0, fixed: bool = False,
               min_iter: int | None = None):
    """:func:`_eigs_jit` with the Lanczos loop in Python (:func:`_lanczos_host`)."""
    k_start, k_lanczos, k_ritz = jr.split(key, 3)
    v = _start_vector_jit(k_start, op.dim, op.dtype, v0)
    make, args = (None, ()) if fixed else (_eigs_check, (k, which, k_ritz, tol))
    min_iter = _first_stop(k, max_iter, fixed, min_iter)
    out = _lanczos_host(op, v, k_lanczos, max_iter, make, args, min_iter)
    return _eigs_result_jit(*out, k, which, tol, fixed)


def resolve_loop(loop: str, op: AbstractOperator) -> str:
    """Where an iterative estimator's loop over products runs. ``"device"``: one compiled
    loop (``while_loop``/``lax.map``), no host round trip per product. ``"host"``: a Python
    loop, one compiled call per step, for products that run slowly inside a compiled loop
    (convolutions on CPU, see :func:`sde_opt._chunking.loops_are_slow`: on a 151k-parameter
    CNN a Lanczos step cost 300-500 HVPs inside the loop). ``"auto"``: host exactly then."""
    probe = jax.ShapeDtypeStruct((op.dim,), op.dtype)
    tag = (type(getattr(op, "curvature", None)), op.dim, str(op.dtype))
    return choose_loop(loop, op, lambda v: op.mv(v), probe, owner=getattr(op, "problem", None), tag=tag)


def _eigs_run(op, k: int, key, which: str, max_iter: int, tol: float, v0, fixed: bool = False, loop: str = "auto",
              min_iter: int | None = None):
    """:func:`_eigs_jit` or :func:`_eigs_host`, as ``loop`` says (see :func:`resolve_loop`)."""
    run = _eigs_host if resolve_loop(loop, op) == "host" else _eigs_jit
    return run(op, k, key, which, max_iter, tol, v0, fixed, min_iter)


def eigs(op: AbstractOperator, k: int, *, key: PRNGKeyArray, which: str = "largest", max_iter: int | None = None,
         tol: float | None = None, v0=None, fixed_steps: bool = False, loop: str = "auto",
         min_iter: int | None = None) -> EigResult:
    """Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    Lanczos runs until the residual ``|β_j s_{j,i}|`` of every wanted Ritz pair is below
    ``tol · ‖M‖`` (checked every step, by bisection and inverse iteration on the
    tridiagonal matrix), or ``max_iter`` steps; but at least ``min_iter`` steps (default
    ``max(2k + 1, 20)``, or ``max_iter`` if smaller), because a short run can converge to the
    second eigenvalue when the start vector holds little of the first.

    Args:
        op: an operator, e.g. :func:`curvature_operator` or :class:`MatrixOperator`.
        k: number of eigenpairs, ``1 <= k <= op.dim``.
        key: PRNG key for the start vector.
        which: ``"largest"`` (algebraically largest, descending) or ``"smallest"``
            (algebraically smallest, ascending: negative curvature at saddles).
        max_iter: most Lanczos steps (default ``min(dim, max(4k, 100))``); memory is
            ``max_iter × dim``.
        tol: relative residual tolerance (default ``√eps`` of the dtype).
        v0: warm start, ``(m,)`` or ``(r, m)`` (e.g. the previous eigenvectors; rows are
            summed). A random tenth is mixed in so that new eigenvalues are not missed.
        fixed_steps: run exactly ``max_iter`` steps with no residual test (``tol`` then only
            sets ``converged``): a smaller compiled graph, for a jitted loop that measures
            at every record, such as :func:`sde_opt.stability.train_with_sharpness`, warm-started from
            the previous record's vectors.
        min_iter: steps before the residual test may stop the run (default ``max(2k + 1,
            20)``). Lower it when products are expensive and a loose ``tol`` is enough: the run
            can then stop as soon as the residual test passes. The risk is the one above: a
            Ritz value with a small residual that belongs to the second eigenvalue (on the
            digits MLP, λ₁ and λ₂ 3.5% apart, a stop allowed from step k + 2 returned λ₂ for 2
            of 2,000 random starts; from step 12 on for 11 of 10,000; from step 14 on, for
            none of 10,000).
        loop: ``"device"`` runs the Lanczos loop compiled (a ``while_loop``); ``"host"``
            runs it in Python, one compiled call per step, the same numbers to rounding;
            ``"auto"`` (default) picks host on CPU when a product's convolutions cost more than about 1e6 FLOPs,
            which XLA's CPU backend runs many times slower inside a compiled loop (on a
            151k-parameter CNN, 300-500 HVPs per step instead of one).

    Returns:
        :class:`EigResult` (``values``, ``vectors``, ``residuals``, ``n_iter``, ``converged``).

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> op = so.curvature.MatrixOperator(jnp.diag(jnp.array([1.0, 5.0, 2.0])))
        >>> res = so.curvature.eigs(op, 1, key=jr.key(0), max_iter=3, fixed_steps=True)
        >>> round(float(res.values[0]), 4), int(res.n_iter)
        (5.0, 3)
    """
    key = check_key(key)
    op = check_operator(op)
    n = op.dim
    k = n_eigenpairs(k, n)
    which = which_end(which)
    max_iter = resolve_max_iter(max_iter, k, n)
    tol = _default_tol(op.dtype) if tol is None else float(tol)
    if v0 is not None and jnp.shape(v0)[-1] != n:
        raise ValueError(f"v0 has {jnp.shape(v0)[-1]} entries but the operator has dimension {n}.")
    min_iter = None if min_iter is None else positive_int("min_iter", min_iter)
    return _eigs_run(op, k, key, which, max_iter, tol, v0, bool(fixed_steps), loop, min_iter)


def hessian_eigs(problem: Problem, theta, k: int, *, key: PRNGKeyArray, which: str = "largest", group=None,
                 curvature: AbstractCurvature | None = None, max_iter: int | None = None, tol: float | None = None,
                 v0=None, loop: str = "auto", min_iter: int | None = None):
    """Top-``k`` (``which="largest"``) or bottom-``k`` (``"smallest"``) eigenpairs of the
    Hessian of ``problem`` at ``theta``, matrix-free (Lanczos, see :func:`eigs`).

    Returns:
        ``(values, vectors)``: ``(k,)`` sorted in the order asked for and ``(k, m)`` unit
        rows, with ``m = d`` (or the size of ``group``; embed with
        ``so.curvature.parameter_groups(problem)[group]``). A :class:`UserWarning` is raised outside
        ``jit`` when Lanczos did not converge in ``max_iter`` steps. ``loop``, ``min_iter``: see
        :func:`eigs`.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 5.0, 2.0])))
        >>> vals, vecs = so.hessian_eigs(prob, jnp.zeros(3), 2, key=jr.key(0))
        >>> [round(float(v), 4) for v in vals]
        [5.0, 2.0]
    """
    op = curvature_operator(problem, theta, curvature=curvature, group=group)
    res = eigs(op, k, key=key, which=which, max_iter=max_iter, tol=tol, v0=v0, loop=loop, min_iter=min_iter)
    if is_concrete(res.converged) and not bool(res.converged):
        warnings.warn(
            f"Lanczos did not reach tol in {int(res.n_iter)} steps (largest residual "
            f"{float(jnp.max(res.residuals)):.2e}); pass a larger max_iter for more accurate eigenpairs.",
            stacklevel=2,
        )
    return res.values, res.vectors


# ---------------------------------------------------------------------------------------
# traces
# ---------------------------------------------------------------------------------------


class TraceEstimate(eqx.Module):
    """A trace estimate: ``value`` with its standard error ``stderr`` (from the spread of the
    probe samples), the per-probe ``samples`` and the number of products ``n_matvecs``."""

    value: Float[Array, ""]
    stderr: Float[Array, ""]
    samples: Float[Array, " n"]
    n_matvecs: int = eqx.field(static=True)


def _default_batch(n: int) -> int:
    """Probes handled at once by default: all (``vmap``) on accelerators; one at a time on
    CPU, where a whole Lanczos run per probe (spectral density) vmapped ran 2–6× slower per
    probe. Plain products batch better, see :func:`map_products`."""
    return 1 if jax.default_backend() == "cpu" else n


def map_probes(f, xs, batch: int | None = None):
    """``f`` over the leading axis of ``xs``, ``batch`` at a time (default: see above)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    batch = _default_batch(n) if batch is None else batch
    if n == 1:  # no batching at all: vmap would turn the loops' conds into selects
        return jax.tree_util.tree_map(lambda y: y[None], f(jax.tree_util.tree_map(lambda x: x[0], xs)))
    if batch >= n:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=None if batch == 1 else batch)


_CPU_PRODUCT_BATCH = 8


def map_products(mv, vs, probe_batch=None):
    """``mv`` over the rows of ``vs``. On CPU, 8 products at a time by default: the batched
    products of a linearised network share their GEMMs' overheads (measured on one core,
    digits MLP, d = 4,810: 0.32 ms per product one at a time, 0.17–0.18 ms at 4–16 at a time,
    0.46 ms all 96 at once, which spills the cache)."""
    if probe_batch is None and jax.default_backend() == "cpu":
        probe_batch = _CPU_PRODUCT_BATCH
    return map_probes(mv, vs, probe_batch)


# host-driven products (convolutional models on CPU) batch 8 at a time up to this dimension, one
# at a time beyond: the tangents of a batch multiply the activations a product holds. Measured
# per product (2,048 images in chunks of 128, 2 cores): the 151k-parameter CNN 0.57 s alone,
# 0.48 s in batches of 8; the 1.17M-parameter ResNet 4.8 s alone, 7.7 s in batches of 8.
_HOST_BATCH_MAX_DIM = 500_000


def _host_product_batch(dim: int) -> int:
    return _CPU_PRODUCT_BATCH if dim <= _HOST_BATCH_MAX_DIM else 1


class _HostLoop(AbstractOperator):
    """``op`` whose batches of products an estimator runs from Python, one compiled call
    per batch (``loop="host"``, see :func:`resolve_loop`)."""

    op: AbstractOperator

    def linear(self):
        return self.op.linear()

    @property
    def dim(self):
        return self.op.dim

    @property
    def dtype(self):
        return self.op.dtype


@eqx.filter_jit
def _batch_products(op, vs):
    return jax.vmap(op.linear())(vs)


def operator_products(op: AbstractOperator, vs, probe_batch=None):
    """``op``'s products with the rows of ``vs``: :func:`map_products` in one compiled
    loop, or, for an operator marked ``_HostLoop``, ``probe_batch`` rows at a time from
    Python (the last batch padded, so it compiles once)."""
    if not isinstance(op, _HostLoop):
        return map_products(op.linear(), vs, probe_batch)
    n = vs.shape[0]
    b = min(n, _host_product_batch(op.dim) if probe_batch is None else probe_batch)
    out = []
    for i in range(0, n, b):
        batch = vs[i : i + b]
        m = batch.shape[0]
        if m < b:
            batch = jnp.concatenate([batch, jnp.zeros((b - m,) + batch.shape[1:], batch.dtype)])
        out.append(_batch_products(op.op, batch)[:m])
    return jnp.concatenate(out)


def _mean_stderr(samples):
    n = samples.shape[0]
    mean = jnp.mean(samples)
    if n < 2:
        return mean, jnp.full((), jnp.nan, samples.dtype)
    return mean, jnp.std(samples, ddof=1) / jnp.sqrt(n)


class AbstractTraceEstimator(eqx.Module):
    """A stochastic trace estimator: ``estimate(op, key, n_probes) -> TraceEstimate``."""

    probe_batch: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def estimate(self, op: AbstractOperator, key, n_probes: int) -> TraceEstimate:
        """Estimate ``Tr M`` with ``n_probes`` products."""

    def min_probes(self) -> int:
        return 2


class Hutchinson(AbstractTraceEstimator):
    """``Tr M ≈ (1/n) Σ zᵢᵀ M zᵢ`` with Rademacher ``zᵢ`` (Hutchinson 1989); unbiased, and
    the standard error is the sample standard deviation over ``√n``. ``probe_batch``: how
    many probes are multiplied at once (``vmap``); ``None``: all on accelerators, 8 at a
    time on CPU (faster there), one at a time for host-driven products (convolutional models on
    CPU) beyond 5·10⁵ parameters."""

    probe_batch: int | None = eqx.field(static=True, default=None)

    def estimate(self, op, key, n_probes):
        z = jr.rademacher(key, (n_probes, op.dim), op.dtype)
        samples = jnp.sum(z * operator_products(op, z, self.probe_batch), axis=1)
        value, stderr = _mean_stderr(samples)
        return TraceEstimate(value=value, stderr=stderr, samples=samples, n_matvecs=n_probes)


class HutchPlusPlus(AbstractTraceEstimator):
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): a third of the products find the top
    of the spectrum (``Q = qr(M S)``), whose trace ``Tr(QᵀMQ)`` is exact; the rest estimate
    the deflated remainder by Hutchinson. Far lower variance when a few eigenvalues
    dominate (neural-network Hessians). The standard error is the remainder's, given
    ``Q`` (the exact part carries none)."""

    probe_batch: int | None = eqx.field(static=True, default=None)

    def min_probes(self) -> int:
        return 4

    def estimate(self, op, key, n_probes):
        n_s = n_probes // 3
        n_g = n_probes - 2 * n_s
        k_s, k_g = jr.split(key)
        s = jr.rademacher(k_s, (n_s, op.dim), op.dtype)
        q, _ = jnp.linalg.qr(operator_products(op, s, self.probe_batch).T)  # (m, n_s)
        g = jr.rademacher(k_g, (n_g, op.dim), op.dtype)
        g = g - (g @ q) @ q.T
        # Q's products and the remainder's, given Q, are independent: one batched call
        qg = jnp.concatenate([q.T, g])
        quad = jnp.sum(qg * operator_products(op, qg, self.probe_batch), axis=1)
        exact, samples = jnp.sum(quad[:n_s]), quad[n_s:]
        rest, stderr = _mean_stderr(samples)
        return TraceEstimate(value=exact + rest, stderr=stderr, samples=exact + samples, n_matvecs=n_probes)


@eqx.filter_jit
def _trace_jit(op, key, n_probes: int, estimator):
    return estimator.estimate(op, key, n_probes)


def trace(op: AbstractOperator, *, key: PRNGKeyArray, n_probes: int,
          estimator: AbstractTraceEstimator | None = None, loop: str = "auto") -> TraceEstimate:
    """Stochastic trace of a symmetric operator with ``n_probes`` products.

    ``estimator``: :class:`Hutchinson` (default) or :class:`HutchPlusPlus`. ``loop``: where
    the loop over batches of products runs, as in :func:`eigs` (``"host"``: one compiled
    call per batch; the same numbers to rounding)."""
    key = check_key(key)
    op = check_operator(op)
    estimator = Hutchinson() if estimator is None else estimator
    if not isinstance(estimator, AbstractTraceEstimator):
        raise ValueError(f"estimator must be so.curvature.Hutchinson() or so.curvature.HutchPlusPlus(), got {type(estimator).__name__}.")
    n_probes = positive_int("n_probes", n_probes)
    if n_probes < estimator.min_probes():
        raise ValueError(
            f"{type(estimator).__name__} needs n_probes >= {estimator.min_probes()} for a standard error, "
            f"got {n_probes}."
        )
    if resolve_loop(loop, op) == "host":
        return estimator.estimate(_HostLoop(op), key, n_probes)
    return _trace_jit(op, key, n_probes, estimator)


def hessian_trace(problem: Problem, theta, *, key: PRNGKeyArray, n_probes: int, group=None,
                  curvature: AbstractCurvature | None = None,
                  estimator: AbstractTraceEstimator | None = None, loop: str = "auto") -> TraceEstimate:
    """``Tr ∇²L(p)`` (or of another curvature / a parameter group) from ``n_probes``
    Hessian-vector products; ``.value`` and ``.stderr``.

    ``estimator``: :class:`Hutchinson` (default) or :class:`HutchPlusPlus`, the better choice
    for network Hessians, whose top eigenvalues stand out: on the digits MLPs of
    ``benchmarks/bench_curvature.py`` its variance at equal products is 2.7–6.6× smaller.
    ``loop``: see :func:`trace`.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 5.0, 2.0])))
        >>> tr = so.hessian_trace(prob, jnp.zeros(3), key=jr.key(0), n_probes=10)
        >>> round(float(tr.value), 4)  # Rademacher probes are exact on a diagonal matrix
        8.0
    """
    op = curvature_operator(problem, theta, curvature=curvature, group=group)
    return trace(op, key=key, n_probes=n_probes, estimator=estimator, loop=loop)


# ---------------------------------------------------------------------------------------
# spectral density (SLQ)
# ---------------------------------------------------------------------------------------


class SpectralDensity(eqx.Module):
    """A spectral density from stochastic Lanczos quadrature.

    For each unit probe ``v`` (``n_probes`` of them), Lanczos gives ``T = S diag(θ) Sᵀ``
    and the Gauss quadrature ``vᵀ f(M) v ≈ Σⱼ wⱼ f(θⱼ)`` with nodes ``θⱼ`` and weights
    ``wⱼ = S₀ⱼ²`` (exact for polynomials of degree ``< 2·n_iter``). Averaged over probes
    with ``E[vvᵀ] = I/m`` this estimates ``(1/m) Σᵢ δ(t − λᵢ)``.

    Attributes:
        nodes: ``(n_probes, n_iter)`` quadrature nodes.
        weights: ``(n_probes, n_iter)`` weights; each row sums to 1.
        dim: dimension ``m`` of the operator.
    """

    nodes: Float[Array, "p n"]
    weights: Float[Array, "p n"]
    dim: int = eqx.field(static=True)

    def moment(self, k: int) -> Float[Array, ""]:
        """``∫ tᵏ φ(t) dt``, an unbiased estimate of ``Tr(Mᵏ)/m``."""
        return jnp.mean(self._probe_moments(k))

    def moment_stderr(self, k: int) -> Float[Array, ""]:
        """Standard error of :meth:`moment` over probes."""
        return _mean_stderr(self._probe_moments(k))[1]

    def _probe_moments(self, k):
        return jnp.sum(self.weights * self.nodes**k, axis=1)

    def default_sigma(self) -> Float[Array, ""]:
        """Kernel width: 1% of the spread of the nodes."""
        lo, hi = jnp.min(self.nodes), jnp.max(self.nodes)
        return 0.01 * jnp.maximum(hi - lo, jnp.finfo(self.nodes.dtype).eps * (1 + jnp.abs(hi)))

    def grid(self, n: int = 1000, margin: float = 5.0, sigma=None) -> Float[Array, " n"]:
        """``n`` points covering all nodes plus ``margin`` kernel widths on each side."""
        sigma = self.default_sigma() if sigma is None else sigma
        return jnp.linspace(jnp.min(self.nodes) - margin * sigma, jnp.max(self.nodes) + margin * sigma, n)

    def density(self, t, sigma=None) -> Float[Array, " n"]:
        """The density smoothed with a Gaussian kernel of width ``sigma``, at points ``t``;
        it integrates to 1 over the real line."""
        sigma = self.default_sigma() if sigma is None else jnp.asarray(sigma)
        t = jnp.asarray(t)
        z = (t[:, None] - self.nodes.reshape(-1)[None, :]) / sigma
        kern = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
        return kern @ self.weights.reshape(-1) / self.nodes.shape[0]


def _slq_probe(key, dim: int, dtype):
    k_v, k_l = jr.split(key)
    v = jr.rademacher(k_v, (dim,), dtype)
    return v / jnp.linalg.norm(v), k_l


def _slq_quadrature(alpha, beta):
    """Gauss quadrature nodes and weights of one probe's tridiagonal ``T``."""
    if alpha.shape[0] == 1:
        return alpha, jnp.ones_like(alpha)
    off = beta[:-1]
    theta = jsl.eigh_tridiagonal(alpha, off, eigvals_only=True)
    s = _tridiagonal_eigvecs(alpha, off, theta)
    return theta, s[0] ** 2


@eqx.filter_jit
def _slq_jit(op, key, n_probes: int, n_iter: int):
    mv = op.linear()

    def one(k):
        v, k_l = _slq_probe(k, op.dim, op.dtype)
        alpha, beta, _, _, _ = _lanczos(mv, v, k_l, n_iter)
        return _slq_quadrature(alpha, beta)

    nodes, weights = map_probes(one, jr.split(key, n_probes))
    return SpectralDensity(nodes=nodes, weights=weights, dim=op.dim)


_slq_probe_jit = eqx.filter_jit(_slq_probe)
_slq_quadrature_jit = jax.jit(_slq_quadrature)


def _slq_host(op, key, n_probes: int, n_iter: int):
    """:func:`_slq_jit` with the probes and the Lanczos steps looped over in Python."""
    nodes, weights = [], []
    for k in jr.split(key, n_probes):
        v, k_l = _slq_probe_jit(k, op.dim, op.dtype)
        alpha, beta, _, _, _ = _lanczos_host(op, v, k_l, n_iter)
        t, w = _slq_quadrature_jit(alpha, beta)
        nodes.append(t)
        weights.append(w)
    return SpectralDensity(nodes=jnp.stack(nodes), weights=jnp.stack(weights), dim=op.dim)


def spectral_density(op: AbstractOperator, *, key: PRNGKeyArray, n_probes: int = 8,
                     n_iter: int = 80, loop: str = "auto") -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature:
    ``n_probes`` Rademacher probes (vmapped), ``n_iter`` Lanczos steps each (at most the
    dimension). Cost: ``n_probes · n_iter`` products, memory ``n_probes · n_iter · m``.
    ``loop``: where the Lanczos loops run, as in :func:`eigs`."""
    key = check_key(key)
    op = check_operator(op)
    n_probes = positive_int("n_probes", n_probes)
    n_iter = min(positive_int("n_iter", n_iter), op.dim)
    run = _slq_host if resolve_loop(loop, op) == "host" else _slq_jit
    return run(op, key, n_probes, n_iter)


def hessian_density(problem: Problem, theta, *, key: PRNGKeyArray, n_probes: int = 8, n_iter: int = 80, group=None,
                    curvature: AbstractCurvature | None = None, loop: str = "auto") -> SpectralDensity:
    """Hessian spectral density of ``problem`` at ``theta`` (SLQ, see :func:`spectral_density`;
    ``loop`` as in :func:`eigs`).

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.arange(1.0, 11.0)))
        >>> dens = so.curvature.hessian_density(prob, jnp.zeros(10), key=jr.key(0), n_probes=4, n_iter=10)
        >>> round(float(dens.moment(1)), 3)  # Tr H / d
        5.5
    """
    op = curvature_operator(problem, theta, curvature=curvature, group=group)
    return spectral_density(op, key=key, n_probes=n_probes, n_iter=n_iter, loop=loop)


def plot_spectral_density(density: SpectralDensity, ax=None, *, sigma=None, n_grid: int = 1000, log: bool = True,
                          outliers=None, label: str | None = None, **plot_kw):
    """Plot a :class:`SpectralDensity` (smoothed) on ``ax`` (a new figure if ``None``).

    Args:
        sigma: kernel width (default 1% of the spread of the nodes).
        log: logarithmic density axis (the bulk and the outliers differ by decades).
        outliers: eigenvalues to mark (e.g. the top ``k`` from :func:`hessian_eigs`),
            drawn as ticks on the axis.
        plot_kw: passed to ``ax.plot``.

    Returns:
        the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    sigma = density.default_sigma() if sigma is None else sigma
    t = density.grid(n_grid, sigma=sigma)
    phi = density.density(t, sigma)
    t, phi = np.asarray(t), np.asarray(phi)
    if log:
        floor = max(float(phi.max()) * 1e-8, np.finfo(np.float32).tiny)
        ax.semilogy(t, np.maximum(phi, floor), label=label, **plot_kw)
        ax.set_ylim(bottom=floor)
    else:
        ax.plot(t, phi, label=label, **plot_kw)
    if outliers is not None:
        for lam in np.atleast_1d(np.asarray(outliers)):
            ax.axvline(float(lam), color="0.3", lw=0.8, ls=":", zorder=0)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    return ax


# ---------------------------------------------------------------------------------------
# sub-sampled estimates
# ---------------------------------------------------------------------------------------


class SubsampledEstimate(eqx.Module):
    """An estimate on random subsets of the examples, with its spread across subsets.

    Attributes:
        values: ``(n_subsets, ...)`` the estimate on each subset.
        mean: ``(...)`` their mean: the sub-sampled estimate.
        stderr: ``(...)`` the standard error of ``mean`` across subsets
            (``std(values, ddof=1) / √n_subsets``), which covers both the estimator's own
            randomness and the choice of examples.
        subset_size: examples per subset; ``n_examples``: examples of the whole problem.
    """

    values: Array
    mean: Array
    stderr: Array
    subset_size: int
    n_examples: int


def subsampled(estimate: Callable, problem: Problem, theta, *, key: PRNGKeyArray, subset_size: int,
               n_subsets: int = 8) -> SubsampledEstimate:
    """``estimate(sub_problem, theta, key)`` on ``n_subsets`` independent random subsets of
    ``subset_size`` distinct examples (:meth:`~sde_opt.Problem.subsample`, keys split from
    ``key``), with the mean and its standard error across subsets: the sub-sampled curvature
    PyHessian computes on one mini-batch, with an error bar. Each subset's loss is
    ``L_S = (1/|S|) Σ_{i∈S} fᵢ``, so an estimate that is linear in the loss (a trace, a
    quadratic form, ``Tr D`` up to the centring) has expectation its full-data value; a
    nonlinear one (``λmax``) is biased at small subsets (λmax of a sub-sampled Hessian is
    larger on average), and comparing two subset sizes shows by how much.

    Args:
        estimate: ``(problem, theta, key) -> array`` (e.g. ``lambda p, th, k:
            so.hessian_eigs(p, th, 1, key=k)[0]``).
        problem: a finite-sum :class:`~sde_opt.Problem`.
        theta: flat parameters ``(d,)``.
        key: PRNG key (subset ``i`` and its estimate use ``fold_in(key, i)``).
        subset_size: examples per subset, ``1 <= subset_size <= n_examples``.
        n_subsets: subsets, at least 2 for a standard error.

    Examples:
        >>> import jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=200, dim=3)
        >>> th = prob.info["minima"][0]
        >>> est = so.curvature.subsampled(lambda p, t, k: so.hessian_trace(p, t, key=k, n_probes=3).value,
        ...                               prob, th, key=jr.key(1), subset_size=50, n_subsets=4)
        >>> est.values.shape, bool(est.stderr > 0)
        ((4,), True)
    """
    key = check_key(key)
    problem._need_data("subsampled")
    n_subsets = positive_int("n_subsets", n_subsets)
    if n_subsets < 2:
        raise ValueError(f"n_subsets={n_subsets}: a standard error across subsets needs n_subsets >= 2.")
    values = []
    for i in range(n_subsets):
        k_subset, k_est = jr.split(jr.fold_in(key, i))
        values.append(jnp.asarray(estimate(problem.subsample(subset_size, key=k_subset), theta, k_est)))
    values = jnp.stack(values)
    return SubsampledEstimate(values=values, mean=jnp.mean(values, axis=0),
                              stderr=jnp.std(values, axis=0, ddof=1) / math.sqrt(n_subsets),
                              subset_size=int(subset_size), n_examples=int(problem.n_examples))


register_result(TraceEstimate)
register_result(SpectralDensity)
register_result(EigResult)
register_result(SubsampledEstimate)
