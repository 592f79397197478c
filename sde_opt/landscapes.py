"""Analytic landscapes with known minima, saddles, Hessians and barriers.

Each function returns a :class:`sde_opt.Problem` whose ``info`` dict records what is known
in closed form (``minima``, ``saddles``, ``hessians_min``, ``hessians_saddle``,
``barrier``, ``dim``), so tests and analyses can compare against ground truth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ._checks import all_finite, is_concrete, positive, positive_int, square_matrix
from ._problem import Problem


def _f(x):
    return jnp.asarray(x, dtype=jnp.result_type(float))


@jax.custom_jvp
def _half_quadratic_form(e, h):
    """``½ eᵀ H e`` for a symmetric ``H``, with its derivative written out.

    Autodiff of the plain expression spends two products with ``H`` on a gradient, one of them
    with a transposed operand; the rule below spends one (``e H``, which is ``H e`` as ``H`` is
    symmetric). For an ensemble of paths these ``(paths, d) × (d, d)`` products are the engine's
    hot loop. The rule is made of jax operations, so HVPs and tangents in ``H`` still work.
    """
    return 0.5 * jnp.dot(e, jnp.dot(e, h))


def _half_quadratic_form_jvp(primals, tangents):
    (e, h), (de, dh) = primals, tangents
    g = jnp.dot(e, h)
    out = 0.5 * jnp.dot(e, g)
    # Symbolic zeros: a landscape's H is a constant, so its tangent term usually costs nothing.
    dout = jnp.zeros_like(out) if isinstance(de, SymbolicZero) else jnp.dot(g, de)
    if not isinstance(dh, SymbolicZero):
        dout = dout + 0.5 * jnp.dot(e, jnp.dot(e, dh))
    return out, dout


_half_quadratic_form.defjvp(_half_quadratic_form_jvp, symbolic_zeros=True)


def quadratic(hessian, minimum=None) -> Problem:
    """``L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*)`` with a symmetric ``H``.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 10.0]))).loss(jnp.ones(2))
        Array(5.5, dtype=float32)
    """
    h = square_matrix("hessian", hessian)
    d = h.shape[0]
    m = jnp.zeros(d, h.dtype) if minimum is None else _f(minimum)
    if m.shape != (d,):
        raise ValueError(f"minimum must have shape ({d},) to match hessian, got {m.shape}.")
    if not all_finite(m):
        raise ValueError("minimum contains non-finite values (nan or inf); pass a finite point.")

    def loss(theta):
        return _half_quadratic_form(theta - m, h)

    return Problem(loss, info={"dim": d, "minima": m[None], "hessians_min": h[None]}, name="quadratic")


def double_well(barrier=1.0, curvature=1.0, dim: int = 1, transverse=None) -> Problem:
    """Double well ``h (x₀²/a² − 1)²`` in the first coordinate, with minima at ``x₀ = ±a``,
    ``a = √(8h/κ)`` so that the curvature at each minimum is ``κ`` and ``−κ/2`` at the saddle
    ``x₀ = 0``; the other ``dim − 1`` coordinates are independent quadratics ``½ kᵢ xᵢ²``
    (separable d-D well; ``transverse`` gives the ``kᵢ``, default ``κ``).

    Args:
        barrier: ``h = L(saddle) − L(minimum) > 0``.
        curvature: ``κ = L''`` at the minima.
        dim: total dimension ``d >= 1``.
        transverse: ``(d − 1,)`` curvatures of the other coordinates.
    """
    h = positive("barrier", barrier)
    kappa = positive("curvature", curvature)
    dim = positive_int("dim", dim)
    k = jnp.full((dim - 1,), kappa) if transverse is None else _f(transverse)
    if k.shape != (dim - 1,):
        raise ValueError(f"transverse must have shape ({dim - 1},), got {k.shape}.")
    if is_concrete(k) and not bool(jnp.all(jnp.isfinite(k) & (k > 0))):
        raise ValueError(f"transverse curvatures must be finite and > 0 (minima need them), got {k}.")
    a = jnp.sqrt(8.0 * h / kappa)

    def loss(theta):
        x = theta[0]
        return h * (x**2 / a**2 - 1.0) ** 2 + 0.5 * jnp.sum(k * theta[1:] ** 2)

    e0 = jnp.zeros(dim).at[0].set(1.0)
    hmin = jnp.diag(jnp.concatenate([kappa[None], k]))
    hsad = jnp.diag(jnp.concatenate([-0.5 * kappa[None], k]))
    info = {
        "dim": dim,
        "minima": jnp.stack([-a * e0, a * e0]),
        "saddles": jnp.zeros((1, dim)),
        "hessians_min": jnp.stack([hmin, hmin]),
        "hessians_saddle": hsad[None],
        "barrier": h,
        "half_width": a,
    }
    return Problem(loss, info=info, name="double_well")


def _sharp_flat_profile(ratio: float):
    """Quartic ``v`` with ``v'(x) = (x² − 1)(αx + β)``, ``v''(−1) = 1``, ``v''(1) = ratio``."""
    alpha, beta = (1.0 + ratio) / 4.0, (ratio - 1.0) / 4.0

    def v(x):  # ∫ (x²−1)(αx+β) dx = α x⁴/4 + β x³/3 − α x²/2 − β x
        return alpha * x**4 / 4 + beta * x**3 / 3 - alpha * x**2 / 2 - beta * x

    x_top = -beta / alpha
    return v, x_top


def sharp_flat(sharp=10.0, flat=1.0, barrier=1.0, sharp_transverse=None, flat_transverse=None, angle=0.0) -> Problem:
    """A 2-D landscape with a sharp minimum at ``(−w, 0)`` and a flat one at ``(+w, 0)``
    (before a rotation of the plane by ``angle`` radians, which makes the Hessians
    non-diagonal so that diagonal and full Hessian-shaped noise differ).

    ``L(x, y) = V(x) + ½ k(x) y²``: ``V`` is the quartic whose curvature is ``sharp`` at the
    left minimum and ``flat`` at the right one, scaled so the barrier seen from the sharp
    minimum is ``barrier``; ``k`` interpolates the transverse curvature geometrically from
    ``sharp_transverse`` to ``flat_transverse`` (defaults: ``sharp`` and ``flat``). The
    Hessians at both minima are exactly ``diag(sharp, k_s)`` and ``diag(flat, k_f)``.
    """
    a = float(positive("sharp", sharp))
    b = float(positive("flat", flat))
    hb = float(positive("barrier", barrier))
    ks = a if sharp_transverse is None else float(positive("sharp_transverse", sharp_transverse))
    kf = b if flat_transverse is None else float(positive("flat_transverse", flat_transverse))
    v, x_top = _sharp_flat_profile(b / a)
    dv_sharp = v(x_top) - v(-1.0)
    c = hb / dv_sharp  # energy scale
    w = np.sqrt(c / a)  # V''(−w) = c/w² · 1 = a

    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def loss(theta):
        x, y = jnp.asarray(rot.T) @ theta  # coordinates in the unrotated frame
        u = x / w
        p = jnp.clip((u + 1.0) / 2.0, 0.0, 1.0)
        s = p * p * (3.0 - 2.0 * p)
        logk = (1.0 - s) * np.log(ks) + s * np.log(kf)
        return c * v(u) + 0.5 * jnp.exp(logk) * y**2

    kx_top = c / w**2 * (x_top**2 - 1.0) * (1.0 + b / a) / 4.0
    p_top = (x_top + 1.0) / 2.0
    s_top = p_top * p_top * (3 - 2 * p_top)
    ky_top = np.exp((1 - s_top) * np.log(ks) + s_top * np.log(kf))
    turn = lambda h: rot @ h @ rot.T
    info = {
        "dim": 2,
        "minima": jnp.array([rot @ [-w, 0.0], rot @ [w, 0.0]]),
        "saddles": jnp.array([rot @ [x_top * w, 0.0]]),
        "hessians_min": jnp.array([turn(np.diag([a, ks])), turn(np.diag([b, kf]))]),
        "hessians_saddle": jnp.array([turn(np.diag([kx_top, ky_top]))]),
        "barrier": jnp.array([hb, c * (v(x_top) - v(1.0))]),
        "values_min": jnp.array([c * v(-1.0), c * v(1.0)]),
    }
    return Problem(loss, info=info, name="sharp_flat")


def strict_saddle() -> Problem:
    """``L(x, y) = ½x² + ¼y⁴ − ½y²``: a strict saddle at the origin (Hessian diag(1, −1))
    between minima at ``(0, ±1)`` (Hessian diag(1, 2)); barrier ¼."""

    def loss(theta):
        x, y = theta[0], theta[1]
        return 0.5 * x**2 + 0.25 * y**4 - 0.5 * y**2

    info = {
        "dim": 2,
        "minima": jnp.array([[0.0, -1.0], [0.0, 1.0]]),
        "saddles": jnp.zeros((1, 2)),
        "hessians_min": jnp.array([np.diag([1.0, 2.0])] * 2),
        "hessians_saddle": jnp.array([np.diag([1.0, -1.0])]),
        "barrier": jnp.asarray(0.25),
    }
    return Problem(loss, info=info, name="strict_saddle")


def saddle(eigenvalues, quartic=1.0, basis=None) -> Problem:
    """A ``d``-dimensional strict saddle at the origin with the Hessian eigenvalues given,
    confined by a quartic along its negative directions so that minima exist.

    In the eigenbasis ``u = Qᵀθ`` (``Q = basis``, orthogonal, default ``I``):
    ``L(θ) = Σᵢ ½ λᵢ uᵢ² + (q/4) Σ_{λᵢ<0} uᵢ⁴``. The origin is a saddle of index
    ``k = #{λᵢ < 0}`` with Hessian ``Q diag(λ) Qᵀ``; the ``2^k`` minima sit at
    ``uᵢ = ±√(|λᵢ|/q)`` on the negative directions (0 elsewhere), with Hessian
    ``Q diag(2|λᵢ| on negative, λᵢ on positive directions) Qᵀ`` and barrier
    ``Σ_{λᵢ<0} λᵢ²/(4q)``. :func:`strict_saddle` is ``saddle([1, −1])``.

    Args:
        eigenvalues: ``(d,)`` non-zero Hessian eigenvalues at the saddle, at least one negative.
        quartic: ``q > 0``, the confining strength (the minima are at distance ``√(|λ|/q)``).
        basis: ``(d, d)`` orthogonal matrix whose columns are the eigenvectors.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.landscapes.saddle(jnp.array([-2.0, -0.5, 1.0]))
        >>> prob.info["saddle_index"], prob.info["minima"].shape
        (2, (4, 3))
    """
    lam = _f(eigenvalues)
    if lam.ndim != 1 or lam.size < 1:
        raise ValueError(f"eigenvalues must be a non-empty vector (d,), got shape {lam.shape}.")
    lam_np = np.asarray(lam, np.float64)
    if not (np.all(np.isfinite(lam_np)) and np.all(lam_np != 0)):
        raise ValueError(f"eigenvalues must be finite and non-zero (a strict saddle), got {lam_np}.")
    neg = lam_np < 0
    if not neg.any():
        raise ValueError(f"eigenvalues need at least one negative entry for a saddle, got {lam_np}.")
    q = positive("quartic", quartic)
    d = lam.shape[0]
    if basis is None:
        qmat = jnp.eye(d, dtype=lam.dtype)
    else:
        qmat = _f(basis)
        if qmat.shape != (d, d):
            raise ValueError(f"basis must have shape ({d}, {d}) to match eigenvalues, got {qmat.shape}.")
        if is_concrete(qmat) and not np.allclose(np.asarray(qmat).T @ np.asarray(qmat), np.eye(d), atol=1e-6):
            raise ValueError("basis must be orthogonal (basis.T @ basis = I); orthonormalise it with jnp.linalg.qr.")
    mask = jnp.asarray(neg, lam.dtype)

    def loss(theta):
        u = theta @ qmat
        return 0.5 * jnp.sum(lam * u**2) + 0.25 * q * jnp.sum(mask * u**4)

    idx = np.flatnonzero(neg)
    k = idx.size
    signs = np.array(np.meshgrid(*([[-1.0, 1.0]] * k), indexing="ij")).reshape(k, -1).T  # (2^k, k)
    u_min = np.zeros((signs.shape[0], d))
    u_min[:, idx] = signs * np.sqrt(np.abs(lam_np[idx]) / float(q))
    lam_min = np.where(neg, 2.0 * np.abs(lam_np), lam_np)
    q_np = np.asarray(qmat, np.float64)
    turn = lambda diag: q_np @ np.diag(diag) @ q_np.T
    info = {
        "dim": d,
        "minima": jnp.asarray(u_min @ q_np.T, lam.dtype),
        "saddles": jnp.zeros((1, d), lam.dtype),
        "hessians_min": jnp.asarray(np.stack([turn(lam_min)] * signs.shape[0]), lam.dtype),
        "hessians_saddle": jnp.asarray(turn(lam_np)[None], lam.dtype),
        "barrier": jnp.asarray(np.sum(lam_np[idx] ** 2) / (4.0 * float(q)), lam.dtype),
        "saddle_index": int(k),
        "eigenvalues_saddle": lam,
        "eigenvectors_saddle": qmat,
    }
    return Problem(loss, info=info, name="saddle")


_ST_MIN = -2.903534027771177  # root of 4x³ − 32x + 5 = 0 (global minimiser per coordinate)


def styblinski_tang(dim: int = 2) -> Problem:
    """``L(θ) = ½ Σ (θᵢ⁴ − 16θᵢ² + 5θᵢ)``; global minimum at ``θᵢ ≈ −2.9035`` for all i,
    with ``2^d`` local minima (per coordinate −2.9035 or 2.7468)."""
    dim = positive_int("dim", dim)

    def loss(theta):
        return 0.5 * jnp.sum(theta**4 - 16.0 * theta**2 + 5.0 * theta)

    hii = 6.0 * _ST_MIN**2 - 16.0
    info = {
        "dim": dim,
        "minima": jnp.full((1, dim), _ST_MIN),
        "hessians_min": (hii * jnp.eye(dim))[None],
    }
    return Problem(loss, info=info, name="styblinski_tang")


def x_plus_sin() -> Problem:
    """The textbook 1-D example ``f(x) = x + sin x``: monotone, with degenerate stationary
    points (``f' = f'' = 0``) at ``x = π + 2πk``; gradient flow from 2.5 creeps to ``−π``."""

    def loss(theta):
        return theta[0] + jnp.sin(theta[0])

    return Problem(loss, info={"dim": 1, "stationary": jnp.array([[-np.pi], [np.pi]])}, name="x_plus_sin")


def sin_minus_square(amplitude=25.0) -> Problem:
    """The textbook 1-D example ``f(x) = 25 sin x − x²`` (amplitude adjustable): many local
    maxima and minima of different sharpness riding on a concave parabola."""
    amp = positive("amplitude", amplitude)

    def loss(theta):
        return amp * jnp.sin(theta[0]) - theta[0] ** 2

    return Problem(loss, info={"dim": 1}, name="sin_minus_square")


def perturbed_sum(problem: Problem, *, n_examples: int = 32, shift_std=0.1, key, kind: str = "shift", df=None) -> Problem:
    """A finite sum built from an analytic landscape, so that real SGD can run on it.

    * ``kind="shift"``: ``fᵢ(θ) = L(θ − δᵢ)``; the noise is state-dependent,
      ``D(θ) ≈ H(θ) Cov(δ) H(θ)`` for small shifts, but the mean loss is a smoothed ``L``
      (shifts comparable to the basin width reshape it).
    * ``kind="tilt"``: ``fᵢ(θ) = L(θ) + δᵢᵀθ``; the mean loss is exactly ``L`` and the
      noise is constant, ``D = Cov(δ)``, but discrete (``N`` values), not Gaussian.

    ``δᵢ`` are centred Gaussian draws with ``shift_std`` per coordinate, or Student-t draws
    with ``df > 2`` degrees of freedom (heavy-tailed per-example gradients) scaled to the
    same standard deviation. ``info`` keeps the
    base landscape's facts (exact for "tilt", approximate for small "shift")."""
    import jax.random as jr

    n = positive_int("n_examples", n_examples)
    std = positive("shift_std", shift_std)
    d = problem.dim
    if d is None:
        raise ValueError("perturbed_sum needs a landscape with a known dimension (info['dim']).")
    if kind not in ("shift", "tilt"):
        raise ValueError(f"kind must be 'shift' or 'tilt', got {kind!r}.")
    if df is None:
        shifts = std * jr.normal(key, (n, d))
    else:
        if not df > 2:
            raise ValueError(f"df must be > 2 (finite variance), got {df}.")
        shifts = std * jr.t(key, df, (n, d)) / jnp.sqrt(df / (df - 2.0))
    shifts = shifts - jnp.mean(shifts, axis=0)

    if kind == "shift":
        def loss(theta, delta):
            return problem.loss(theta - delta)
    else:
        def loss(theta, delta):
            return problem.loss(theta) + delta @ theta

    return Problem(loss, shifts, info=dict(problem.info), name=f"{kind}ed_{problem.name}")
