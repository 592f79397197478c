"""The spectrum of the mini-batch noise ``D(θ) = (1/N) Σ ∇fᵢ∇fᵢᵀ − ∇L∇Lᵀ``, never as a
``d × d`` matrix.

With ``Gc`` the ``N × m`` matrix of centred per-example gradients, ``D = GcᵀGc/N`` and the
``N × N`` Gram matrix ``K = GcGcᵀ/N`` share their nonzero eigenvalues; an eigenvector
``u`` of ``K`` gives the eigenvector ``Gcᵀu/‖Gcᵀu‖`` of ``D`` (the "Gram trick"). When
``N · m`` is too large to hold ``Gc``, :func:`noise_eigs` streams over the examples in
chunks instead and runs Lanczos on the product ``D v`` (:class:`NoiseCovariance`), which
holds one chunk of gradients at a time.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from ._checks import check_key, n_eigenpairs, positive_int
from ._curvature import (
    AbstractCurvature,
    AbstractOperator,
    CurvatureOperator,
    _chunked_jtj,
    _default_tol,
    _eigs_jit,
    curvature_operator,
    eigs,
)
from ._chunking import _unroll, map_examples, split_chunks
from ._problem import Problem

# above these sizes noise_eigs streams (Lanczos on D·v) instead of forming the Gram matrix
_GRAM_MAX_EXAMPLES = 4096
_GRAM_MAX_FLOATS = 50_000_000


def _grad_fn(problem: Problem, to_full):
    return jax.grad(lambda u, ex: problem.example_loss(to_full(u), ex))


def _scan_examples(problem: Problem, fn, init, chunk_size: int):
    """``fn(carry, chunk, mask) -> carry`` over the examples in chunks of ``chunk_size``
    (the last one padded, with ``mask`` false on the padding)."""
    n = problem.n_examples
    c = min(chunk_size, n)
    data = split_chunks(problem.data, n, c)
    n_chunks = jax.tree_util.tree_leaves(data)[0].shape[0]
    mask = (jnp.arange(n_chunks * c) < n).reshape(n_chunks, c)
    carry, _ = jax.lax.scan(lambda carry, xs: (fn(carry, *xs), None), init, (data, mask), unroll=_unroll(n_chunks))
    return carry


def per_example_grads(problem: Problem, to_full, u, chunk_size: int | None = None) -> Float[Array, "n m"]:
    """``∇fᵢ`` with respect to the coordinates ``u`` (``to_full(u)`` = flat parameters), by
    ``vmap(grad)``, ``chunk_size`` examples at a time (bounds the activation memory)."""
    g = _grad_fn(problem, to_full)
    f = lambda ex: g(u, ex)  # noqa: E731
    chunk_size = problem.chunk_size if chunk_size is None else chunk_size
    return map_examples(f, problem.data, chunk_size)


class NoiseCovariance(AbstractCurvature):
    """``D(θ)`` as a curvature value, so every estimator (``eigs``, ``trace``,
    ``spectral_density``) applies to the noise as to the Hessian.

    ``D v = (1/N) Σ ∇fᵢ (sᵢ − s̄)`` with ``sᵢ = ∇fᵢ·v``: one JVP of the per-example
    losses and one VJP (about two gradients a product), never the per-example gradients.
    With ``chunk_size`` the examples are streamed in chunks of that many (one chunk's
    activations at a time, ``D v = Jᵀ(J v)/N − ∇L (∇L·v)``); ``None`` takes the problem's own
    ``chunk_size``.
    """

    chunk_size: int | None = eqx.field(static=True, default=None)
    needs_data: ClassVar[bool] = True

    def linearise(self, problem, to_full, u):
        n = problem.n_examples
        chunk_size = problem.chunk_size if self.chunk_size is None else self.chunk_size
        if chunk_size is None or chunk_size >= n:
            f = lambda w: jax.vmap(problem.example_loss, in_axes=(None, 0))(to_full(w), problem.data)  # noqa: E731
            _, f_jvp = jax.linearize(f, u)
            f_vjp = jax.linear_transpose(f_jvp, u)

            def mv(v):
                s = f_jvp(v)
                return f_vjp((s - jnp.mean(s)) / n)[0]

            return mv
        return lambda v: _chunked_jtj(problem, to_full, u, v, chunk_size, centred=True)


def noise_operator(problem: Problem, theta, *, group=None, chunk_size: int | None = None) -> CurvatureOperator:
    """The operator ``v ↦ D(p) v`` (optionally of a parameter group, streamed in chunks)."""
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    return curvature_operator(problem, theta, curvature=NoiseCovariance(chunk_size), group=group)


def _centred_grads(op: CurvatureOperator, chunk_size):
    g = per_example_grads(op.problem, op.to_full, op.point, chunk_size)
    return g - jnp.mean(g, axis=0)


_centred_grads_jit = eqx.filter_jit(_centred_grads)


class GramOperator(AbstractOperator):
    """``D = GcᵀGc/N`` from the centred gradients ``Gc`` (``N × m``), applied on the smaller
    side: on ``R^m`` as ``D`` when ``m <= N``, else on ``R^N`` as the Gram matrix
    ``K = GcGcᵀ/N`` (same nonzero eigenvalues; map eigenvectors with :meth:`to_params`)."""

    gc: Float[Array, "n m"]

    @property
    def on_examples(self) -> bool:
        return self.gc.shape[0] < self.gc.shape[1]

    def linear(self):
        n = self.gc.shape[0]
        if self.on_examples:
            return lambda v: self.gc @ (self.gc.T @ v) / n
        return lambda v: self.gc.T @ (self.gc @ v) / n

    @property
    def dim(self):
        return int(min(self.gc.shape))

    @property
    def dtype(self):
        return self.gc.dtype

    def to_params(self, vecs: Float[Array, "k r"]) -> Float[Array, "k m"]:
        """Eigenvectors of the operator as unit eigenvectors of ``D`` (rows)."""
        if not self.on_examples:
            return vecs
        out = vecs @ self.gc
        return out / jnp.maximum(jnp.linalg.norm(out, axis=1, keepdims=True), jnp.finfo(out.dtype).tiny)


_DENSE_GRAM = 128  # up to this size the Gram (or D) matrix is formed and diagonalised densely


def gram_eigs(gc: Float[Array, "n m"], k: int, key, *, max_iter: int | None = None, tol: float | None = None, v0=None):
    """Top-``k`` eigenpairs of ``D = GcᵀGc/N`` from the smaller of ``D`` and the Gram matrix
    ``K = GcGcᵀ/N``: dense ``eigh`` when that side is at most 128, else Lanczos (exact to
    ``tol``). Returns ``(values, vectors, n_iter)``; ``v0`` warm-starts Lanczos in
    parameter space."""
    key = check_key(key)
    op = GramOperator(gc)
    n = op.dim
    k_eff = min(k, n)
    if n <= _DENSE_GRAM:
        small = gc @ gc.T if op.on_examples else gc.T @ gc
        lam, vecs = jnp.linalg.eigh(small / gc.shape[0])
        lam, vecs = lam[::-1][:k_eff], vecs[:, ::-1][:, :k_eff].T
        return jnp.clip(lam, 0.0), op.to_params(vecs), jnp.asarray(n, jnp.int32)
    if v0 is not None and op.on_examples:
        v0 = jnp.atleast_2d(v0) @ gc.T
    max_iter = min(n, max(4 * k_eff, 100)) if max_iter is None else min(max(max_iter, k_eff), n)
    tol = _default_tol(gc.dtype) if tol is None else tol
    res = _eigs_jit(op, k_eff, key, "largest", max_iter, tol, v0)
    return jnp.clip(res.values, 0.0), op.to_params(res.vectors), res.n_iter


@eqx.filter_jit
def _gram_eigs(op: CurvatureOperator, k: int, chunk_size, key):
    gc = _centred_grads(op, chunk_size)
    vals, vecs, _ = gram_eigs(gc, k, key)
    return vals, vecs


def _use_streaming(op: CurvatureOperator, streaming) -> bool:
    if streaming is not None:
        return bool(streaming)
    n = op.problem.n_examples
    return n > _GRAM_MAX_EXAMPLES or n * op.dim > _GRAM_MAX_FLOATS


def noise_eigs(problem: Problem, theta, k: int, *, group=None, chunk_size: int | None = None, streaming: bool | None = None,
               key=None, max_iter: int | None = None):
    """Top-``k`` eigenpairs of the mini-batch noise covariance ``D(p)`` without a ``d × d``
    matrix.

    By default from the centred per-example gradients ``Gc`` (Gram trick: the smaller of
    ``D`` and the ``N × N`` Gram matrix, dense up to 128, else by Lanczos to ``√eps``);
    for large ``N`` or ``N · d`` (or ``streaming=True``) by Lanczos on ``D v`` streamed over
    the examples in chunks (memory ``chunk_size × d`` plus the Lanczos basis).

    Args:
        problem: a finite-sum problem (``data`` given).
        p: flat parameters ``(d,)``.
        k: number of eigenpairs; at most the dimension and, for the Gram route, ``N − 1``
            (the rank of a centred covariance of ``N`` gradients).
        group: restrict to one parameter group (see ``so.curvature.parameter_groups``).
        chunk_size: examples per ``vmap(grad)`` batch (default: all at once; streaming
            default 256).
        streaming: force (``True``) or forbid (``False``) the streaming route.
        key: start vector of the Lanczos iteration (default ``jr.key(0)``).
        max_iter: most Lanczos steps when streaming.

    Returns:
        ``(values, vectors)``: ``(k,)`` descending and ``(k, m)`` unit rows.

    Examples:
        >>> import jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=32, dim=3)
        >>> vals, vecs = so.noise_eigs(prob, prob.info["minima"][0], 2)
        >>> vals.shape, vecs.shape
        ((2,), (2, 3))
    """
    key = None if key is None else check_key(key)
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    op = noise_operator(problem, theta, group=group)
    k = n_eigenpairs(k, op.dim)
    if _use_streaming(op, streaming):
        chunk = chunk_size or problem.chunk_size or 256
        op = CurvatureOperator(problem=op.problem, theta=op.theta, curvature=NoiseCovariance(chunk),
                               start=op.start, size=op.size)
        res = eigs(op, k, key=jr.key(0) if key is None else key, max_iter=max_iter)
        return jnp.clip(res.values, 0.0), res.vectors
    n = problem.n_examples
    if k > max(n - 1, 1):
        raise ValueError(
            f"k={k} exceeds N-1={n - 1}: a covariance of N={n} centred gradients has at most N-1 nonzero "
            f"eigenvalues; ask for k <= {max(n - 1, 1)}."
        )
    return _gram_eigs(op, k, chunk_size, jr.key(0) if key is None else key)


@eqx.filter_jit
def _noise_trace(op: CurvatureOperator, chunk_size):
    problem = op.problem
    n = problem.n_examples
    chunk_size = problem.chunk_size if chunk_size is None else chunk_size
    if chunk_size is None or chunk_size >= n:
        gc = _centred_grads(op, None)
        return jnp.sum(gc**2) / n
    g = jax.vmap(_grad_fn(problem, op.to_full), in_axes=(None, 0))
    u = op.point

    def mean_step(acc, chunk, mask):
        return acc + jnp.sum(g(u, chunk) * mask[:, None], axis=0)

    gbar = _scan_examples(problem, mean_step, jnp.zeros_like(u), chunk_size) / n

    def sq_step(acc, chunk, mask):
        return acc + jnp.sum(mask[:, None] * (g(u, chunk) - gbar) ** 2)

    return _scan_examples(problem, sq_step, jnp.zeros((), u.dtype), chunk_size) / n


def noise_trace(problem: Problem, theta, *, group=None, chunk_size: int | None = None) -> Float[Array, ""]:
    """``Tr D(p) = (1/N) Σ ‖∇fᵢ − ∇L‖²``, exact (two streamed passes when ``chunk_size``
    is given, so memory stays at one chunk of gradients)."""
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    op = noise_operator(problem, theta, group=group)
    return _noise_trace(op, chunk_size)


def centred_gradients(problem: Problem, theta, *, group=None, chunk_size: int | None = None) -> Float[Array, "n m"]:
    """The ``N × m`` centred per-example gradients ``Gc`` with ``D = GcᵀGc/N``."""
    op = noise_operator(problem, theta, group=group)
    return _centred_grads_jit(op, chunk_size)


__all__ = [
    "GramOperator",
    "gram_eigs",
    "NoiseCovariance",
    "noise_operator",
    "noise_eigs",
    "noise_trace",
    "centred_gradients",
    "per_example_grads",
]
