"""Is the noise shaped like the curvature? Diagnostics comparing ``D(θ)`` with ``H = ∇²L(θ)``.

* ``Tr(HD) / (Tr H · Tr D)`` (Zhu, Wu, Yu, Wu & Ma 2019): ``1/d`` for isotropic noise of
  the same size, up to 1 when both are rank one and aligned; ``d`` times it
  (``ratio_vs_isotropic``) is 1 for isotropic noise.
* The overlap ``‖V_Hᵀ V_D‖²_F / k`` of the top-``k`` eigenspaces (1: the same subspace).
* The slope of ``B·Var(g_B)`` against ``H`` along ``H``'s top eigenvectors ``vⱼ``: with
  replacement ``B·Var(vⱼᵀg_B) = vⱼᵀDvⱼ = qⱼ``; the least-squares slope through the origin
  of ``qⱼ`` on ``λⱼ``. Near a minimum of a negative log-likelihood ``D ≈ F ≈ H`` and the
  slope is about 1 (Xie, Sato & Sugiyama 2021); away from it, or for other losses, not.
* The gradient noise scale ``B_noise = Tr D / ‖∇L‖²`` (McCandlish, Kaplan, Amodei et al.
  2018): batches much larger than it waste compute.
* The noise-to-signal ratio ``Tr Var(g_B) / ‖∇L‖² = B_noise / B`` (with replacement):
  Li, Malladi & Arora (2021, §5) derive from it a necessary condition for the SDE model
  and the linear scaling rule; when it is small the drift dominates each step and the
  diffusion approximation carries little of the dynamics.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_key, n_eigenpairs, positive_int
from ._curvature import (
    CurvatureOperator,
    TraceEstimate,
    _default_tol,
    _eigs_jit,
    _mean_stderr,
    curvature_operator,
    resolve_max_iter,
    map_products,
)
from ._io import register_result
from ._noise import batch_factor
from ._noise_spectrum import gram_eigs, per_example_grads
from ._problem import Problem


def eigenspace_overlap(a: Float[Array, "ka m"], b: Float[Array, "kb m"]) -> Float[Array, ""]:
    """``‖A Bᵀ‖²_F / min(ka, kb)`` for orthonormal rows ``A``, ``B``: 1 when one span
    contains the other, ``≈ kb/m`` for random subspaces."""
    a, b = jnp.atleast_2d(a), jnp.atleast_2d(b)
    return jnp.sum((a @ b.T) ** 2) / min(a.shape[0], b.shape[0])


class Alignment(eqx.Module):
    """Noise–curvature diagnostics at one point (see the module docstring for the formulas).

    Attributes:
        trace_h, trace_h_stderr: ``Tr H`` (Hutchinson; stderr 0 when exact).
        trace_d: ``Tr D`` (exact).
        trace_hd, trace_hd_stderr: ``Tr(HD)`` (Hutchinson with the same probes; or exact).
        ratio, ratio_stderr: ``Tr(HD)/(Tr H · Tr D)`` (delta-method standard error).
        overlap: top-``k`` eigenspace overlap of ``H`` and ``D``.
        hessian_values: ``(k,)`` top eigenvalues ``λⱼ`` of ``H``.
        noise_along_hessian: ``(k,)`` ``qⱼ = vⱼᵀ D vⱼ`` along ``H``'s eigenvectors.
        noise_values: ``(k,)`` top eigenvalues of ``D``.
        slope: ``Σ λⱼqⱼ / Σ λⱼ²``.
        grad_norm_sq: ``‖∇L‖²``.
        noise_scale: ``Tr D / ‖∇L‖²``.
        dim: number of parameters compared.
    """

    trace_h: Float[Array, ""]
    trace_h_stderr: Float[Array, ""]
    trace_d: Float[Array, ""]
    trace_hd: Float[Array, ""]
    trace_hd_stderr: Float[Array, ""]
    ratio: Float[Array, ""]
    ratio_stderr: Float[Array, ""]
    overlap: Float[Array, ""]
    hessian_values: Float[Array, " k"]
    noise_along_hessian: Float[Array, " k"]
    noise_values: Float[Array, " k"]
    slope: Float[Array, ""]
    grad_norm_sq: Float[Array, ""]
    noise_scale: Float[Array, ""]
    dim: int = eqx.field(static=True)

    @property
    def ratio_vs_isotropic(self):
        """``d · ratio``: 1 for isotropic noise of the same trace, > 1 when aligned."""
        return self.dim * self.ratio

    def noise_to_signal(self, batch_size: int, n_examples: int | None = None, replacement: bool = True):
        """``Tr Var(g_B) / ‖∇L‖²`` for batches of ``batch_size`` (``(N−B)/(N−1)`` more
        without replacement)."""
        return batch_factor(n_examples, batch_size, replacement) * self.noise_scale


def _gradients(op: CurvatureOperator, chunk_size):
    g = per_example_grads(op.problem, op.to_full, op.point, chunk_size)
    gbar = jnp.mean(g, axis=0)
    return g - gbar, gbar


def _measure(op: CurvatureOperator, key, k: int, n_probes: int | None, chunk_size, max_iter: int, tol: float,
             v0_h=None, v0_d=None):
    """All diagnostics at one point; pure, so it also runs inside the tracking loop.
    Returns ``(Alignment, hessian eigenvectors, noise eigenvectors, Lanczos steps)``."""
    k_h, k_d, k_z = jr.split(key, 3)
    gc, gbar = _gradients(op, chunk_size)
    n = gc.shape[0]
    trace_d = jnp.sum(gc**2) / n

    def dmv(v):
        return gc.T @ (gc @ v) / n

    eig_h = _eigs_jit(op, k, k_h, "largest", max_iter, tol, v0_h)
    noise_vals, noise_vecs, _ = gram_eigs(gc, k, k_d, tol=tol, v0=v0_d)
    q = jnp.sum((eig_h.vectors @ gc.T) ** 2, axis=1) / n
    lam = eig_h.values
    slope = jnp.sum(lam * q) / jnp.sum(lam**2)
    overlap = eigenspace_overlap(eig_h.vectors, noise_vecs)

    mv = op.linear()
    if n_probes is None:  # exact: m HVPs for Tr H, N for Tr(HD) = (1/N) Σ gcᵢᵀ H gcᵢ
        eye = jnp.eye(op.dim, dtype=op.dtype)
        trace_h = jnp.sum(eye * jax.lax.map(mv, eye, batch_size=min(op.dim, 64)))
        trace_hd = jnp.sum(gc * jax.lax.map(mv, gc, batch_size=min(n, 64))) / n
        zero = jnp.zeros((), op.dtype)
        trace_h_se = trace_hd_se = ratio_se = zero
        ratio = trace_hd / (trace_h * trace_d)
    else:
        z = jr.rademacher(k_z, (n_probes, op.dim), op.dtype)
        hz = map_products(mv, z)
        a = jnp.sum(z * hz, axis=1)
        b = jnp.sum(hz * jax.vmap(dmv)(z), axis=1)
        trace_h, trace_h_se = _mean_stderr(a)
        trace_hd, trace_hd_se = _mean_stderr(b)
        ratio = trace_hd / (trace_h * trace_d)
        influence = (b / trace_hd - a / trace_h) * ratio  # delta method for B̄ / (Ā · c)
        ratio_se = jnp.std(influence, ddof=1) / jnp.sqrt(n_probes)
    grad_norm_sq = jnp.sum(gbar**2)
    out = Alignment(
        trace_h=trace_h,
        trace_h_stderr=trace_h_se,
        trace_d=trace_d,
        trace_hd=trace_hd,
        trace_hd_stderr=trace_hd_se,
        ratio=ratio,
        ratio_stderr=ratio_se,
        overlap=overlap,
        hessian_values=lam,
        noise_along_hessian=q,
        noise_values=noise_vals,
        slope=slope,
        grad_norm_sq=grad_norm_sq,
        noise_scale=trace_d / grad_norm_sq,
        dim=op.dim,
    )
    return out, eig_h.vectors, noise_vecs, eig_h.n_iter


@eqx.filter_jit
def _alignment_jit(op, key, k, n_probes, chunk_size, max_iter, tol):
    return _measure(op, key, k, n_probes, chunk_size, max_iter, tol)[0]


def _check_alignment_args(problem, theta, k, n_probes, group, chunk_size):
    problem._need_data("alignment")
    op = curvature_operator(problem, theta, group=group)
    k = n_eigenpairs(k, op.dim)
    if k > max(problem.n_examples - 1, 1):
        raise ValueError(
            f"k={k} exceeds N-1={problem.n_examples - 1}: D has at most N-1 nonzero eigenvalues with "
            f"N={problem.n_examples} examples; use k <= {max(problem.n_examples - 1, 1)}."
        )
    if n_probes is not None:
        n_probes = positive_int("n_probes", n_probes)
        if n_probes < 2:
            raise ValueError(f"n_probes must be >= 2 for a standard error, got {n_probes}; or None for exact traces.")
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    return op, k, n_probes, chunk_size


def alignment(problem: Problem, theta, *, key: PRNGKeyArray, k: int = 5, n_probes: int | None = 32, group=None,
              chunk_size: int | None = None, max_iter: int | None = None) -> Alignment:
    """Noise–curvature alignment of a finite-sum problem at ``theta``.

    Args:
        problem: a problem with ``data``.
        p: flat parameters ``(d,)``.
        key: PRNG key (Lanczos start vectors and probes).
        k: number of top eigenpairs of ``H`` and ``D`` compared (``<= min(d, N − 1)``).
        n_probes: Rademacher probes for ``Tr H`` and ``Tr(HD)``; ``None`` computes both
            exactly with ``d + N`` Hessian-vector products (small problems).
        group: restrict to a parameter group (see ``so.curvature.parameter_groups``).
        chunk_size: examples per per-example-gradient batch (memory).
        max_iter: most Lanczos steps for ``H``.

    Returns:
        :class:`Alignment`.

    Examples:
        >>> import jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=64, dim=3)
        >>> al = so.curvature.alignment(prob, prob.info["minima"][0], key=jr.key(1), k=2, n_probes=None)
        >>> bool(al.ratio > 1 / 3)  # least squares at its minimum: D is shaped like H
        True
    """
    key = check_key(key)
    op, k, n_probes, chunk_size = _check_alignment_args(problem, theta, k, n_probes, group, chunk_size)
    max_iter = resolve_max_iter(max_iter, k, op.dim)
    return _alignment_jit(op, key, k, n_probes, chunk_size, max_iter, _default_tol(op.dtype))


@eqx.filter_jit
def _trace_hd_jit(op, key, n_probes, chunk_size):
    gc, _ = _gradients(op, chunk_size)
    n = gc.shape[0]
    if n_probes is None:
        samples = jnp.sum(gc * jax.lax.map(op.linear(), gc, batch_size=min(n, 64)), axis=1)
        return TraceEstimate(value=jnp.mean(samples), stderr=jnp.zeros((), op.dtype), samples=samples, n_matvecs=n)
    z = jr.rademacher(key, (n_probes, op.dim), op.dtype)
    samples = jnp.sum(map_products(op.linear(), z) * ((z @ gc.T) @ gc / n), axis=1)
    value, stderr = _mean_stderr(samples)
    return TraceEstimate(value=value, stderr=stderr, samples=samples, n_matvecs=n_probes)


def trace_hd(problem: Problem, theta, *, key: PRNGKeyArray | None = None, n_probes: int | None = 32, group=None,
             chunk_size: int | None = None) -> TraceEstimate:
    """``Tr(H D)``: Hutchinson with ``n_probes`` probes (``zᵀHDz = (Hz)ᵀ(Dz)``), or exactly
    (``n_probes=None``) as ``(1/N) Σ gcᵢᵀ H gcᵢ`` with ``N`` Hessian-vector products."""
    key = None if key is None else check_key(key)
    op, _, n_probes, chunk_size = _check_alignment_args(problem, theta, 1, n_probes, group, chunk_size)
    if n_probes is not None and key is None:
        raise ValueError("trace_hd with n_probes needs key=...; or pass n_probes=None for the exact trace.")
    return _trace_hd_jit(op, key, n_probes, chunk_size)


@eqx.filter_jit
def _noise_scale_jit(op, chunk_size, scale):
    gc, gbar = _gradients(op, chunk_size)
    return scale * jnp.sum(gc**2) / gc.shape[0] / jnp.sum(gbar**2)


def gradient_noise_scale(problem: Problem, theta, *, group=None, chunk_size: int | None = None) -> Float[Array, ""]:
    """The simple noise scale ``B_noise = Tr D / ‖∇L‖²`` (McCandlish et al. 2018)."""
    op, _, _, chunk_size = _check_alignment_args(problem, theta, 1, None, group, chunk_size)
    return _noise_scale_jit(op, chunk_size, 1.0)


def noise_to_signal(problem: Problem, theta, batch_size: int, *, replacement: bool = True, group=None,
                    chunk_size: int | None = None) -> Float[Array, ""]:
    """``Tr Var(g_B) / ‖∇L‖²``: the noise-to-signal ratio of a batch gradient of size ``B``
    (Li, Malladi & Arora 2021). ``B_noise / B`` with replacement; times ``(N−B)/(N−1)``
    without."""
    op, _, _, chunk_size = _check_alignment_args(problem, theta, 1, None, group, chunk_size)
    b = positive_int("batch_size", batch_size, upper=problem.n_examples, upper_name="n_examples")
    return _noise_scale_jit(op, chunk_size, batch_factor(problem.n_examples, b, replacement))


def noise_hessian_slope(problem: Problem, theta, *, key: PRNGKeyArray, k: int = 10, group=None,
                        chunk_size: int | None = None):
    """Slope of ``B·Var(g_B)`` against ``H`` along ``H``'s top-``k`` eigenvectors.

    Returns:
        ``(slope, hessian_values, noise_along_hessian)``: ``Σ λⱼqⱼ/Σ λⱼ²`` and the ``(k,)``
        pairs ``(λⱼ, qⱼ = vⱼᵀDvⱼ)`` to plot.
    """
    key = check_key(key)
    op, k, _, chunk_size = _check_alignment_args(problem, theta, k, None, group, chunk_size)
    return _slope_jit(op, key, k, chunk_size, resolve_max_iter(None, k, op.dim), _default_tol(op.dtype))


@eqx.filter_jit
def _slope_jit(op, key, k, chunk_size, max_iter, tol):
    gc, _ = _gradients(op, chunk_size)
    eig = _eigs_jit(op, k, key, "largest", max_iter, tol, None)
    q = jnp.sum((eig.vectors @ gc.T) ** 2, axis=1) / gc.shape[0]
    return jnp.sum(eig.values * q) / jnp.sum(eig.values**2), eig.values, q


register_result(Alignment)
