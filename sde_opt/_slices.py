"""Low-dimensional slices of a loss landscape: ``L(θ + Σᵢ αᵢ δᵢ)`` on a grid of ``α``.

One kernel evaluates the loss at the points ``θ + Aᵀc`` of a set of coordinates ``c``
(``A`` the ``(k, d)`` directions): a ``vmap`` over points, ``chunk_size`` points at a time
through the package's one chunk helper (:func:`sde_opt._chunking.map_examples`), jitted
with the problem as an argument (a new ``θ``, new directions or a new grid of the same size
never recompile). Everything else is built on it: the slice on a grid, the 1-D
interpolation between two minima with its barrier, the loss along a projected trajectory.

Directions are values, ``(k, d)`` arrays: Gaussian and filter-normalised (Li et al. 2018),
top Hessian eigenvectors (:func:`sde_opt.hessian_eigs`), PCA of a trajectory, the line
between two points.

Reference: H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape
of Neural Nets", NeurIPS 2018 (arXiv:1712.09913).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import all_finite, check_key, positive_int
from ._chunking import map_examples
from ._curvature import hessian_eigs
from ._io import register_result
from ._problem import Problem

# points × d floats per chunk by default. On accelerators: the (c, d) block of points stays
# below ~32 MB in float32 (a network's activations per point come on top: pass chunk_size= to
# bound them). On CPU small chunks are faster (measured on 2 cores, 51 × 51 grids, float32):
# the digits MLP (d = 2,410, 512 examples) 0.05 ms per point at 4-8 points per chunk, 0.09 ms
# at 1-2 or 16, 0.15 ms with all 2,601 at once; a Flax CNN (d = 151,287, 64 images) 3.5-7 ms
# per point one at a time, 10 ms at 2, 19 ms at 4 or 16: XLA CPU turns a convolution vmapped
# over its kernels into a grouped convolution, much slower than the plain one in a loop.
_POINT_FLOATS = {"cpu": 1 << 15}
_POINT_FLOATS_ACCELERATOR = 1 << 23


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def _finite(name: str, x):
    if not all_finite(x):
        raise ValueError(f"{name} contains non-finite values (nan or inf); pass finite numbers.")
    return x


def _check_directions(directions, d: int, dtype, *, name: str = "directions"):
    a = jnp.asarray(directions)
    if a.ndim == 1 and a.shape[0] == d:
        raise ValueError(f"{name} must be a (k, d) array of k = 1 or 2 directions; for one direction pass "
                         f"{name}[None] (shape (1, {d})), got shape {a.shape}.")
    if a.ndim != 2 or a.shape[1] != d:
        raise ValueError(f"{name} must be a (k, d) array with d = {d} (the problem's dimension), got shape {a.shape}.")
    if a.shape[0] not in (1, 2):
        raise ValueError(f"{name} holds k = {a.shape[0]} directions; a slice is 1-D or 2-D: pass k = 1 or 2 rows.")
    if not jnp.issubdtype(a.dtype, jnp.floating) and not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"{name} must be a real array, got dtype {a.dtype}.")
    return _finite(name, a.astype(dtype))


def _check_grid(grid, k: int, dtype):
    if isinstance(grid, (jax.Array, np.ndarray)) or not isinstance(grid, Sequence):
        raise ValueError(f"grid must be a tuple of k = {k} 1-D coordinate arrays (one per direction), "
                         f"e.g. grid=(jnp.linspace(-1, 1, 51),) * {k}; got {type(grid).__name__}.")
    if len(grid) != k:
        raise ValueError(f"grid has {len(grid)} coordinate arrays but directions has k = {k} rows; pass one "
                         "1-D array per direction.")
    out = []
    for i, g in enumerate(grid):
        g = jnp.asarray(g)
        if g.ndim != 1 or g.shape[0] == 0:
            raise ValueError(f"grid[{i}] must be a non-empty 1-D array of coordinates, got shape {g.shape}.")
        out.append(_finite(f"grid[{i}]", g.astype(dtype)))
    return tuple(out)


def default_chunk_size(n_points: int, d: int) -> int:
    """Grid points per chunk when ``chunk_size=None``: ``2¹⁵/d`` on CPU, ``2²³/d`` on
    accelerators, at least 1 and at most ``n_points``."""
    budget = _POINT_FLOATS.get(jax.default_backend(), _POINT_FLOATS_ACCELERATOR)
    return max(1, min(int(n_points), budget // max(int(d), 1)))


def _check_chunk(chunk_size, n_points: int, d: int) -> int:
    if chunk_size is None:
        return default_chunk_size(n_points, d)
    return min(positive_int("chunk_size", chunk_size), n_points)


def _check_theta(problem: Problem, theta, name: str = "theta"):
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be an so.Problem, got {type(problem).__name__}.")
    return problem.check_params(theta, name)


# ---------------------------------------------------------------------------------------
# the kernel: losses at θ + Aᵀc for a set of coordinates c
# ---------------------------------------------------------------------------------------


@eqx.filter_jit
def _kernel(problem, theta, directions, coords, chunk_size: int):
    return map_examples(lambda c: problem.loss(theta + c @ directions), coords, chunk_size)


def losses_at(problem: Problem, theta, directions, coords, *, chunk_size: int | None = None):
    """``L(θ + Σᵢ cᵢ δᵢ)`` for each row ``c`` of ``coords`` ``(P, k)`` (validated inputs)."""
    return _kernel(problem, theta, directions, coords, _check_chunk(chunk_size, coords.shape[0], theta.shape[0]))


def loss_slice(problem: Problem, theta: Float[Array, " d"], directions: Float[Array, "k d"], *,
               grid: Sequence[Float[Array, " m"]], chunk_size: int | None = None) -> Float[Array, "..."]:
    r"""The loss on a 1-D or 2-D slice through ``theta``.

    The value at index ``(j₁, …, j_k)`` is ``L(θ + Σᵢ grid[i][j_i] · directions[i])``: one
    jitted ``vmap`` over the grid points, ``chunk_size`` points at a time (default: about
    ``2¹⁵/d`` points on CPU, where small chunks are fastest and a convolutional network runs
    best one point at a time, and ``2²³/d`` on accelerators; see the notes in the module's
    source for the measurements). A network problem
    built with ``Problem(..., chunk_size=c)`` also streams each loss over its examples, so
    peak memory is about ``chunk_size × c`` examples' activations. ``chunk_size`` sets how
    many points one program evaluates at once, not what it computes at each: the entries
    agree across chunk sizes to float rounding. They are the same bits for the small models
    of the tests (any ``chunk_size >= 2``); at the digits MLP's size XLA CPU's GEMM blocking
    depends on the batch width and moves the last bit (measured: 4e-16 relative in float64,
    3e-7 in float32). The same ``chunk_size`` always gives the same bits.

    Args:
        problem: the :class:`~sde_opt.Problem`.
        theta: ``(d,)`` centre of the slice.
        directions: ``(k, d)`` flat directions, ``k = 1`` or ``2`` (see
            :func:`filter_normalize` and :mod:`sde_opt.slices` for ways to build them).
        grid: a tuple of ``k`` 1-D coordinate arrays.
        chunk_size: grid points evaluated at once.

    Returns:
        ``(len(grid[0]),)`` or ``(len(grid[0]), len(grid[1]))`` losses (``"ij"`` indexing:
        the first axis runs along the first direction).

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
        >>> g = jnp.array([-1.0, 0.0, 1.0])
        >>> so.loss_slice(prob, jnp.zeros(2), jnp.eye(2), grid=(g, g)).tolist()
        [[2.5, 0.5, 2.5], [2.0, 0.0, 2.0], [2.5, 0.5, 2.5]]
    """
    theta = _check_theta(problem, theta)
    directions = _check_directions(directions, theta.shape[0], theta.dtype)
    grid = _check_grid(grid, directions.shape[0], theta.dtype)
    mesh = jnp.meshgrid(*grid, indexing="ij")
    coords = jnp.stack([m.ravel() for m in mesh], axis=-1)
    return losses_at(problem, theta, directions, coords, chunk_size=chunk_size).reshape(mesh[0].shape)


class Slice(eqx.Module):
    """A slice of the landscape: ``losses[j₁, j₂] = L(theta + grid[0][j₁] δ₁ + grid[1][j₂] δ₂)``.

    Attributes:
        theta: ``(d,)`` centre. directions: ``(k, d)``. grid: ``k`` coordinate arrays.
        losses: the grid's shape.
    """

    theta: Float[Array, " d"]
    directions: Float[Array, "k d"]
    grid: tuple
    losses: Float[Array, "..."]

    @property
    def k(self) -> int:
        return int(self.directions.shape[0])


def landscape_slice(problem: Problem, theta, directions, *, grid, chunk_size: int | None = None) -> Slice:
    """:func:`loss_slice` kept with its centre, directions and grid, for the plots."""
    losses = loss_slice(problem, theta, directions, grid=grid, chunk_size=chunk_size)
    theta = jnp.asarray(theta)
    directions = jnp.asarray(directions, theta.dtype)
    return Slice(theta, directions, tuple(jnp.asarray(g, theta.dtype) for g in grid), losses)


# ---------------------------------------------------------------------------------------
# filter normalisation (Li et al. 2018, §4)
# ---------------------------------------------------------------------------------------


def default_filter_axis(problem: Problem, theta) -> int:
    """The axis that indexes filters (output units) of a kernel: ``0`` for Equinox modules
    (``Linear.weight`` is ``(out, in)``, ``Conv.weight`` ``(out, in, kh, kw)``), ``-1``
    otherwise (Flax linen/nnx kernels are ``(..., in, out)``; plain pytrees are taken to
    follow ``x @ w``, i.e. ``(in, out)``, as :func:`sde_opt.problems.mlp_digits` does)."""
    return 0 if isinstance(problem.model(theta), eqx.Module) else -1


def _normalise_leaf(d, t, axis):
    """Rescale each slice of ``d`` along ``axis`` (``None``: the whole leaf) to the norm of the
    matching slice of ``t``; a zero slice of ``d`` stays zero (no 0/0)."""
    red = None if axis is None else tuple(i for i in range(d.ndim) if i != axis % d.ndim)
    nd = jnp.sqrt(jnp.sum(d * d, axis=red, keepdims=True))
    nt = jnp.sqrt(jnp.sum(t * t, axis=red, keepdims=True))
    safe = jnp.where(nd > 0, nd, 1.0)
    return jnp.where(nd > 0, d * (nt / safe), jnp.zeros_like(d))


def filter_normalize(problem: Problem, theta: Float[Array, " d"], direction: Float[Array, " d"], *,
                     filter_axis: int | Callable | None = None, ignore_1d: bool = True) -> Float[Array, " d"]:
    r"""The filter-normalised direction of Li et al. (2018), as a flat ``(d,)`` vector.

    For each leaf of the parameter pytree (``problem.unravel``) with two or more axes, each
    filter ``d_{i,j}`` of the direction (the slice of the leaf at index ``j`` of its filter
    axis: one output unit of a dense kernel, one output channel of a convolution) is rescaled
    to the norm of the same filter of ``theta``: ``d_{i,j} ← d_{i,j} · ‖θ_{i,j}‖ / ‖d_{i,j}‖``.
    A filter of the direction that is zero stays zero (the ratio is defined as 0 there, so no
    NaN; cf. loss-landscape issue #25), and so does one whose ``θ`` filter is zero.

    Leaves with fewer than two axes (biases, BatchNorm/LayerNorm scales and offsets) and
    leaves named ``bias`` (Equinox's ``Conv`` bias is ``(out, 1, 1)``) are set to zero with
    ``ignore_1d=True`` (Li et al.'s choice), or normalised as one filter with
    ``ignore_1d=False``. A problem without a pytree (``problem.unravel is None``, a loss on a
    flat vector) or whose pytree is a single vector is one filter: the whole direction is
    rescaled to ``‖θ‖``, whatever ``ignore_1d``.

    Args:
        problem: the :class:`~sde_opt.Problem` (its ``unravel`` gives the leaves).
        theta: ``(d,)`` the point whose filter norms are matched.
        direction: ``(d,)`` the raw direction (e.g. Gaussian).
        filter_axis: the axis of a leaf that indexes its filters; default
            ``0`` for Equinox modules (``(out, in, ...)`` weights) and ``-1`` for Flax and plain
            pytrees (``(..., in, out)`` kernels). Or a callable ``(path, leaf) -> axis`` (an
            int, or ``None`` to normalise that leaf as one filter) for mixed conventions.
        ignore_1d: zero the leaves with fewer than two axes.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.Problem(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"]),
        ...                   params={"w": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "b": jnp.ones(2)})
        >>> w = prob.unravel(so.filter_normalize(prob, prob.theta0, jnp.ones(6)))
        >>> jnp.linalg.norm(w["w"], axis=0).round(4).tolist(), w["b"].tolist()  # columns of norm 5 and 1
        ([5.0, 1.0], [0.0, 0.0])
    """
    theta = _check_theta(problem, theta)
    direction = jnp.asarray(direction)
    if direction.shape != theta.shape:
        raise ValueError(f"direction must be a flat vector of shape {theta.shape} like theta, got {direction.shape}; "
                         "normalise one direction at a time.")
    direction = _finite("direction", direction.astype(theta.dtype))
    if problem.unravel is None:
        return _normalise_leaf(direction, theta, None)
    t_tree, d_tree = problem.unravel(theta), problem.unravel(direction)
    leaves = jax.tree_util.tree_leaves(t_tree)
    if len(leaves) == 1 and jnp.ndim(leaves[0]) <= 1:
        return _normalise_leaf(direction, theta, None)
    if filter_axis is None:
        filter_axis = default_filter_axis(problem, theta)
    if not (callable(filter_axis) or isinstance(filter_axis, (int, np.integer))) or isinstance(filter_axis, bool):
        raise ValueError(f"filter_axis must be an int, a callable (path, leaf) -> axis, or None; got {filter_axis!r}.")
    if not callable(filter_axis):
        filter_axis = int(filter_axis)
    return _filter_normalize_tree(problem, theta, direction, filter_axis, bool(ignore_1d))


def _is_bias(path, leaf) -> bool:
    """A leaf with fewer than two axes, or one named ``bias`` (Equinox's ``Conv`` biases are
    ``(out, 1, 1)``)."""
    last = path[-1] if path else None
    name = getattr(last, "name", getattr(last, "key", None))
    return jnp.ndim(leaf) < 2 or name == "bias"


@eqx.filter_jit
def _filter_normalize_tree(problem, theta, direction, filter_axis, ignore_1d: bool):
    t_tree, d_tree = problem.unravel(theta), problem.unravel(direction)

    def leaf(path, d, t):
        if _is_bias(path, d):
            return jnp.zeros_like(d) if ignore_1d else _normalise_leaf(d, t, None)
        axis = filter_axis(path, t) if callable(filter_axis) else int(filter_axis)
        if axis is not None and not -jnp.ndim(d) <= axis < jnp.ndim(d):
            raise ValueError(f"filter_axis={axis} is out of range for the leaf {jax.tree_util.keystr(path)} of "
                             f"shape {jnp.shape(d)}.")
        return _normalise_leaf(d, t, axis)

    out = jax.tree_util.tree_map_with_path(leaf, d_tree, t_tree)
    return jfu.ravel_pytree(out)[0].astype(theta.dtype)


# ---------------------------------------------------------------------------------------
# directions as values
# ---------------------------------------------------------------------------------------


def random_directions(problem: Problem, theta, k: int = 2, *, key: PRNGKeyArray, normalize: bool = True,
                      filter_axis: int | Callable | None = None, ignore_1d: bool = True) -> Float[Array, "k d"]:
    """``k`` Gaussian directions ``(k, d)``, each filter-normalised at ``theta``
    (:func:`filter_normalize`; ``normalize=False`` keeps them raw). Direction ``i`` is drawn
    from ``fold_in(key, i)``. In high dimension two of them are nearly orthogonal, as Li
    et al. rely on; the projections below do not assume it."""
    key = check_key(key)
    theta = _check_theta(problem, theta)
    k = positive_int("k", k, upper=2, upper_name="the largest slice dimension")
    raw = jnp.stack([jr.normal(jr.fold_in(key, i), theta.shape, theta.dtype) for i in range(k)])
    if not normalize:
        return raw
    return jnp.stack([filter_normalize(problem, theta, r, filter_axis=filter_axis, ignore_1d=ignore_1d) for r in raw])


def hessian_directions(problem: Problem, theta, k: int = 2, *, key: PRNGKeyArray, which: str = "largest",
                       **kwargs) -> Float[Array, "k d"]:
    """The top (``which="largest"``) or bottom ``k`` unit Hessian eigenvectors ``(k, d)`` at
    ``theta``, from :func:`sde_opt.hessian_eigs` (its keywords pass through; call it directly
    for the eigenvalues)."""
    key = check_key(key)
    theta = _check_theta(problem, theta)
    k = positive_int("k", k, upper=2, upper_name="the largest slice dimension")
    return hessian_eigs(problem, theta, k, key=key, which=which, **kwargs)[1]


class PCADirections(eqx.Module):
    """Principal directions of a trajectory (Li et al. 2018, §7).

    Attributes:
        directions: ``(k, d)`` orthonormal rows, the top right-singular vectors of
            ``M = [θ₀ − θ_T; …; θ_{T−1} − θ_T]``.
        explained_variance_ratio: ``(k,)`` ``sᵢ² / Σⱼ sⱼ²`` (the share of ``‖M‖²_F`` along each).
        center: ``(d,)`` the final point ``θ_T``, the natural centre of the slice.
    """

    directions: Float[Array, "k d"]
    explained_variance_ratio: Float[Array, " k"]
    center: Float[Array, " d"]


def pca_directions(trajectory: Float[Array, "T d"], k: int = 2) -> PCADirections:
    """PCA directions of a trajectory ``(T, d)`` centred on its final point, as Li et al. do
    (the differences to the final point are not mean-centred: the plane goes through
    ``θ_T``). The signs are fixed so that each direction has a positive component along
    ``θ₀ − θ_T``'s projection (or its largest entry positive when that is zero)."""
    x = jnp.asarray(trajectory)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"trajectory must be a (T, d) array of T >= 2 positions, got shape {x.shape}.")
    _finite("trajectory", x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    k = positive_int("k", k, upper=min(2, x.shape[1]), upper_name="the largest slice dimension (and d)")
    return _pca(x, k)


@eqx.filter_jit
def _pca(x, k: int):
    center = x[-1]
    m = x[:-1] - center
    _, s, vt = jnp.linalg.svd(m, full_matrices=False)
    vt = vt[:k]
    ref = m[0] @ vt.T
    big = vt[jnp.arange(k), jnp.argmax(jnp.abs(vt), axis=1)]
    sign = jnp.where(jnp.abs(ref) > 1e-12 * jnp.max(s), jnp.sign(ref), jnp.sign(big))
    total = jnp.sum(s * s)
    ratio = jnp.where(total > 0, s[:k] ** 2 / jnp.where(total > 0, total, 1.0), 0.0)
    return PCADirections(vt * sign[:, None], ratio, center)


class Interpolation(eqx.Module):
    """The loss on the segment ``θ_a + α (θ_b − θ_a)``, ``α ∈ [0, 1]``.

    Attributes:
        alphas: ``(m,)`` the grid of ``α``, from 0 to 1. losses: ``(m,)``.
        barrier: ``max_α L − max(L(θ_a), L(θ_b))`` on the grid (≥ 0; 0 when the path never
            rises above its higher end: the two points are linearly connected).
        location: the ``α`` of the maximum.
        direction: ``(1, d)`` ``θ_b − θ_a``, the slice's one direction from ``theta_a``.
    """

    alphas: Float[Array, " m"]
    losses: Float[Array, " m"]
    barrier: Float[Array, ""]
    location: Float[Array, ""]
    theta_a: Float[Array, " d"]
    direction: Float[Array, "1 d"]


def interpolation(problem: Problem, theta_a, theta_b, *, n_points: int = 101,
                  chunk_size: int | None = None) -> Interpolation:
    """The 1-D slice between two points (minima, checkpoints): direction ``θ_b − θ_a``,
    grid ``α = 0, 1/(m−1), …, 1``, and the barrier of the linear path (as in the
    mode-connectivity literature: Garipov et al. 2018, Draxler et al. 2018, Frankle et al.
    2020). The barrier is the maximum on the grid: it is exact to the grid's resolution
    (an odd ``n_points`` includes the midpoint ``α = ½``)."""
    theta_a = _check_theta(problem, theta_a, "theta_a")
    theta_b = _check_theta(problem, theta_b, "theta_b")
    m = positive_int("n_points", n_points)
    if m < 2:
        raise ValueError(f"n_points must be >= 2 (the two ends), got {m}.")
    direction = (theta_b - theta_a)[None]
    alphas = jnp.linspace(0.0, 1.0, m, dtype=theta_a.dtype)
    losses = loss_slice(problem, theta_a, direction, grid=(alphas,), chunk_size=chunk_size)
    i = jnp.argmax(losses)
    barrier = losses[i] - jnp.maximum(losses[0], losses[-1])
    return Interpolation(alphas, losses, barrier, alphas[i], theta_a, direction)


# ---------------------------------------------------------------------------------------
# trajectories and ensembles on the plane
# ---------------------------------------------------------------------------------------


@jax.jit
def _least_squares(theta, directions, points):
    """Coordinates ``c`` minimising ``‖x − θ − Aᵀc‖`` for each row ``x`` of ``points``
    (the normal equations ``(AAᵀ) c = A(x − θ)``, solved by the SVD of ``A``, so non-orthogonal
    directions are handled), and the residual distances."""
    diff = points - theta
    u, s, vt = jnp.linalg.svd(directions, full_matrices=False)  # A = U S Vᵀ, (k, k) (k,) (k, d)
    tol = jnp.max(s) * max(directions.shape) * jnp.finfo(directions.dtype).eps
    sinv = jnp.where(s > tol, 1.0 / jnp.where(s > tol, s, 1.0), 0.0)
    coords = ((diff @ vt.T) * sinv) @ u.T  # pinv(Aᵀ) = U S⁻¹ Vᵀ applied to each row
    resid = diff - coords @ directions
    return coords, jnp.linalg.norm(resid, axis=-1), jnp.linalg.norm(diff, axis=-1)


class Projection(eqx.Module):
    """A trajectory projected on the slice ``θ + span(directions)``.

    Attributes:
        coords: ``(T, k)`` least-squares coordinates of each point (exact when the point
            lies on the plane, whether or not the directions are orthogonal).
        residual: ``(T,)`` distance of each point from the plane.
        relative_residual: ``(T,)`` ``residual / ‖x − θ‖`` (0 at ``θ`` itself): near 0 the
            contours of the slice describe the path's surroundings; near 1 the path lies
            mostly off the plane and the contours say little about it.
        loss: ``(T,)`` the true loss along the trajectory.
        loss_projected: ``(T,)`` the loss at the projected points ``θ + Aᵀc``: what the
            slice's contours show at ``coords`` (equal to ``loss`` where the path lies on
            the plane).
    """

    coords: Float[Array, "T k"]
    residual: Float[Array, " T"]
    relative_residual: Float[Array, " T"]
    loss: Float[Array, " T"]
    loss_projected: Float[Array, " T"]


def project_trajectory(problem: Problem, theta, directions, trajectory: Float[Array, "T d"], *,
                       chunk_size: int | None = None) -> Projection:
    """Project a trajectory ``(T, d)`` (e.g. ``ens.ys[i]``) on the slice through ``theta``
    along ``directions`` ``(k, d)``, with the residual distances and the true and projected
    losses (the projected ones through the slice's own kernel: the values :func:`loss_slice`
    gives at ``coords``, to rounding)."""
    theta = _check_theta(problem, theta)
    directions = _check_directions(directions, theta.shape[0], theta.dtype)
    x = jnp.asarray(trajectory)
    if x.ndim != 2 or x.shape[1] != theta.shape[0]:
        raise ValueError(f"trajectory must be a (T, d) array with d = {theta.shape[0]}, got shape {x.shape}; "
                         "for an Ensemble pass ens.ys[i] (one path).")
    x = _finite("trajectory", x.astype(theta.dtype))
    coords, resid, dist = _least_squares(theta, directions, x)
    rel = jnp.where(dist > 0, resid / jnp.where(dist > 0, dist, 1.0), 0.0)
    true = _point_losses(problem, x, chunk_size)
    proj = losses_at(problem, theta, directions, coords, chunk_size=chunk_size)
    return Projection(coords, resid, rel, true, proj)


@eqx.filter_jit
def _points_kernel(problem, points, chunk_size: int):
    return map_examples(problem.loss, points, chunk_size)


def _point_losses(problem, points, chunk_size):
    return _points_kernel(problem, points, _check_chunk(chunk_size, points.shape[0], points.shape[1]))


class PathDensity(eqx.Module):
    """The density of an ensemble of paths projected on a 2-D slice, at chosen saved times.

    Attributes:
        grid: the slice's two coordinate arrays (cell centres).
        times: ``(n_t,)`` the saved times used (SDE time; ``nan`` for plain positions).
        density: ``(n_t, m₁, m₂)`` paths per unit area of the slice's coordinates, so
            ``Σ density · cell area`` is the fraction of paths whose projection falls on
            the grid.
        fraction_inside: ``(n_t,)`` that fraction.
        mean_relative_residual: ``(n_t,)`` the mean ``residual / ‖x − θ‖`` of the paths
            (see :class:`Projection`): how far off the plane the ensemble lies.
    """

    grid: tuple
    times: Float[Array, " n_t"]
    density: Float[Array, "n_t m1 m2"]
    fraction_inside: Float[Array, " n_t"]
    mean_relative_residual: Float[Array, " n_t"]


def _edges(g):
    g = np.asarray(g, np.float64)
    if g.shape[0] < 2 or not np.all(np.diff(g) > 0):
        raise ValueError("each grid array of a density must be increasing with >= 2 points (the cell centres).")
    mid = 0.5 * (g[1:] + g[:-1])
    return np.concatenate([[g[0] - (mid[0] - g[0])], mid, [g[-1] + (g[-1] - mid[-1])]])


def path_density(paths, theta, directions, *, grid, times=None, bandwidth=None) -> PathDensity:
    """Density of an ensemble projected on the 2-D slice ``θ + span(directions)``.

    Args:
        paths: an :class:`~sde_opt.Ensemble` (``ys (n, S, d)``), or positions ``(n, d)`` at
            one time. Diverged paths of an ensemble are dropped.
        theta, directions: the slice (``(d,)``, ``(2, d)``).
        grid: the slice's two coordinate arrays (increasing; cell centres).
        times: SDE times of an ensemble; each picks the nearest saved time (default: the last).
        bandwidth: ``None`` for a 2-D histogram on the grid's cells; a number ``h`` for a
            Gaussian kernel density estimate ``(1/n) Σ φ_h(c − cᵢ)`` evaluated at the grid
            points (``h`` in the slice's coordinates).
    """
    from ._engine import Ensemble

    theta = jnp.asarray(theta)
    if theta.ndim != 1 or not jnp.issubdtype(theta.dtype, jnp.floating):
        raise ValueError(f"theta must be a flat floating-point vector (d,), got shape {theta.shape}, dtype {theta.dtype}.")
    theta = _finite("theta", theta)
    d = theta.shape[0]
    directions = _check_directions(directions, d, theta.dtype)
    if directions.shape[0] != 2:
        raise ValueError("path_density needs a 2-D slice: directions of shape (2, d).")
    grid = _check_grid(grid, 2, theta.dtype)
    if isinstance(paths, Ensemble):
        ys = paths.ys[~paths.diverged]
        ts = np.asarray(paths.ts)
        want = [float(ts[-1])] if times is None else [float(t) for t in np.atleast_1d(times)]
        rows = [int(np.argmin(np.abs(ts - t))) for t in want]
        snaps, used = [ys[:, r] for r in rows], ts[rows]
    else:
        x = jnp.asarray(paths)
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"paths must be an Ensemble or (n, d) positions with d = {d}, got shape {x.shape}.")
        if times is not None:
            raise ValueError("times= selects saved times of an Ensemble; plain (n, d) positions are one time.")
        snaps, used = [x], np.array([np.nan])
    if bandwidth is not None and not (np.isfinite(float(bandwidth)) and float(bandwidth) > 0):
        raise ValueError(f"bandwidth must be a number > 0 (or None for a histogram), got {bandwidth}.")
    e1, e2 = _edges(grid[0]), _edges(grid[1])
    area = np.diff(e1)[:, None] * np.diff(e2)[None, :]
    dens, inside, rres = [], [], []
    for x in snaps:
        x = _finite("paths", jnp.asarray(x, theta.dtype))
        c, res, dist = _least_squares(theta, directions, x)
        c = np.asarray(c, np.float64)
        n = c.shape[0]
        if bandwidth is None:
            h, _, _ = np.histogram2d(c[:, 0], c[:, 1], bins=(e1, e2))
            dens.append(h / (n * area))
            inside.append(h.sum() / n)
        else:
            bw = float(bandwidth)
            g1, g2 = np.asarray(grid[0], np.float64), np.asarray(grid[1], np.float64)
            k1 = np.exp(-0.5 * ((g1[:, None] - c[None, :, 0]) / bw) ** 2)
            k2 = np.exp(-0.5 * ((g2[:, None] - c[None, :, 1]) / bw) ** 2)
            dd = k1 @ k2.T / (n * 2 * np.pi * bw * bw)
            dens.append(dd)
            inside.append(float(np.sum(dd * area)))
        rel = np.where(np.asarray(dist) > 0, np.asarray(res) / np.where(np.asarray(dist) > 0, np.asarray(dist), 1), 0)
        rres.append(float(np.mean(rel)))
    return PathDensity(grid, jnp.asarray(used), jnp.asarray(np.stack(dens)), jnp.asarray(inside),
                       jnp.asarray(rres))


for _cls in (Slice, Interpolation, PCADirections, Projection, PathDensity):
    register_result(_cls)
