"""Curvature and noise recorded during training: an optax optimizer on a ``Problem`` with
sharpness, ``Tr H`` and the noise–curvature alignment measured every ``every`` steps, all
inside one jitted ``lax.scan``.

The top-``k`` Hessian eigenvectors of one record warm-start the Lanczos iteration of the
next (the curvature moves little in ``every`` steps), and likewise for ``D``; the number
of Lanczos steps each record took is part of the history.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._alignment import _measure
from ._checks import check_key, n_eigenpairs, positive_int
from ._curvature import (
    CurvatureOperator,
    Hessian,
    Hutchinson,
    _default_tol,
    _eigs_jit,
    curvature_operator,
    resolve_max_iter,
)
from ._dynamics import OptaxDynamics
from ._io import register_result
from ._problem import Problem
from ._train_loop import AbstractMeasurement, train_and_measure

_NOISE_FIELDS = ("trace_d", "trace_hd", "trace_hd_stderr", "ratio", "ratio_stderr", "overlap", "slope", "noise_scale")


class History(eqx.Module):
    """What :func:`track` recorded, one row per record (``S = n_steps // every + 1``, the
    first at initialisation). Noise fields are ``nan`` for problems without data.

    Attributes:
        step: ``(S,)`` optimizer steps taken before each record.
        loss, grad_norm_sq: ``(S,)`` full-batch ``L`` and ``‖∇L‖²``.
        sharpness: ``(S, k)`` top-``k`` Hessian eigenvalues (``sharpness[:, 0]`` is λmax).
        lanczos_iters: ``(S,)`` Lanczos steps used (warm starts make them few).
        trace_h, trace_h_stderr: ``(S,)`` Hutchinson ``Tr H``.
        trace_d, trace_hd, trace_hd_stderr, ratio, ratio_stderr, overlap, slope, noise_scale: ``(S,)`` as
            in :class:`~sde_opt.curvature.Alignment`.
        noise_values, noise_along_hessian: ``(S, k)``.
        final: ``(d,)`` the parameters after the last step.
    """

    step: Int[Array, " S"]
    loss: Float[Array, " S"]
    grad_norm_sq: Float[Array, " S"]
    sharpness: Float[Array, "S k"]
    lanczos_iters: Int[Array, " S"]
    trace_h: Float[Array, " S"]
    trace_h_stderr: Float[Array, " S"]
    trace_d: Float[Array, " S"]
    trace_hd: Float[Array, " S"]
    trace_hd_stderr: Float[Array, " S"]
    ratio: Float[Array, " S"]
    ratio_stderr: Float[Array, " S"]
    overlap: Float[Array, " S"]
    slope: Float[Array, " S"]
    noise_scale: Float[Array, " S"]
    noise_values: Float[Array, "S k"]
    noise_along_hessian: Float[Array, "S k"]
    final: Float[Array, " d"]

    def columns(self) -> dict[str, np.ndarray]:
        """A tidy table: one 1-D column per quantity, one row per record (``(S, k)`` fields
        become ``name_1 … name_k``). ``pandas.DataFrame(history.columns())`` works."""
        out = {}
        for name in History.__dataclass_fields__:
            if name == "final":
                continue
            v = np.asarray(getattr(self, name))
            if v.ndim == 1:
                out[name] = v
            else:
                for j in range(v.shape[1]):
                    out[f"{name}_{j + 1}"] = v[:, j]
        return out


class _Curvature(AbstractMeasurement):
    """The measurements of :func:`track` at one record: loss, ``‖∇L‖²``, the top-``k``
    Hessian eigenpairs by converged Lanczos (warm-started from the previous record's
    vectors), Hutchinson ``Tr H`` and, ``with_noise``, the alignment diagnostics (the top-``k``
    of ``D`` warm-started too). The carry is ``(Hessian vectors, noise vectors)``."""

    k: int = eqx.field(static=True)
    n_probes: int = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    with_noise: bool = eqx.field(static=True)
    start: int = eqx.field(static=True)
    size: int = eqx.field(static=True)

    def init(self, theta0, key):
        v0 = jr.normal(key, (self.k, self.size), theta0.dtype)
        return v0, v0

    def __call__(self, problem, theta, key, carry):
        v_h, v_d = carry
        dtype, k = theta.dtype, self.k
        nan = jnp.full((), jnp.nan, dtype)
        op = CurvatureOperator(problem=problem, theta=theta, curvature=Hessian(), start=self.start, size=self.size)
        row = {"loss": problem.loss(theta)}
        if self.with_noise:
            al, v_h, v_d, iters = _measure(op, key, k, self.n_probes, self.chunk_size, self.max_iter, self.tol,
                                           v_h, v_d)
            row.update({f: getattr(al, f) for f in _NOISE_FIELDS})
            row.update(sharpness=al.hessian_values, trace_h=al.trace_h, trace_h_stderr=al.trace_h_stderr,
                       noise_values=al.noise_values, noise_along_hessian=al.noise_along_hessian,
                       grad_norm_sq=al.grad_norm_sq)
        else:
            k_e, k_t = jr.split(key)
            eig = _eigs_jit(op, k, k_e, "largest", self.max_iter, self.tol, v_h)
            tr = Hutchinson().estimate(op, k_t, self.n_probes)
            v_h, iters = eig.vectors, eig.n_iter
            row.update({f: nan for f in _NOISE_FIELDS})
            row.update(sharpness=eig.values, trace_h=tr.value, trace_h_stderr=tr.stderr,
                       grad_norm_sq=jnp.sum(op.restrict(jax.grad(problem.loss)(theta)) ** 2),
                       noise_values=jnp.full((k,), jnp.nan, dtype), noise_along_hessian=jnp.full((k,), jnp.nan, dtype))
        row["lanczos_iters"] = iters
        return row, (v_h, v_d)


def track(problem: Problem, optimizer, y0, *, key: PRNGKeyArray, n_steps: int, every: int,
          batch_size: int | None = None, replacement: bool = True, k: int = 1, n_probes: int = 16,
          noise: bool | None = None, group=None, chunk_size: int | None = None,
          max_iter: int | None = None) -> History:
    """Train with an optax optimizer and record curvature and noise every ``every`` steps.

    One jitted ``lax.scan`` over records (the loop of :func:`sde_opt.stability.train_with_sharpness`
    too), each running ``every`` optimizer steps (:class:`~sde_opt.OptaxDynamics`:
    mini-batches of ``batch_size``, full batch when ``None``; step ``j`` draws from
    ``fold_in(fold_in(key, 0), j)``, so ``history.final`` is the final point of path 0 of
    ``so.simulate(so.OptaxDynamics(problem, optimizer, batch_size, replacement), theta0,
    key=key, n_paths=1, n_steps=n_steps)``) and then measuring at the current parameters:
    loss, ``‖∇L‖²``, the top-``k`` Hessian eigenvalues by warm-started Lanczos (converged
    mode of :func:`~sde_opt.curvature.eigs`), Hutchinson ``Tr H`` with ``n_probes`` probes and, for
    finite sums (``noise=None`` means "when the problem has data"), the alignment
    diagnostics of :func:`~sde_opt.curvature.alignment`.

    Args:
        problem: the objective.
        optimizer: an optax ``GradientTransformation``, e.g. ``optax.sgd(0.1)``.
        theta0: flat initial parameters ``(d,)`` (e.g. ``problem.theta0``).
        key: PRNG key (batches, Lanczos starts, probes).
        n_steps, every: optimizer steps in all and between records.
        batch_size, replacement: mini-batch sampling (see :class:`~sde_opt.SGD`).
        k: number of top eigenvalues recorded.
        n_probes: Hutchinson probes per record (``>= 2``).
        noise: record the noise diagnostics (needs data).
        group: measure one parameter group only (training still moves all parameters).
        chunk_size: examples per per-example-gradient batch.
        max_iter: most Lanczos steps per record.

    Returns:
        :class:`History`; ``history.columns()`` is a tidy table.

    Examples:
        >>> import jax.random as jr, optax, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=32, dim=3)
        >>> hist = so.curvature.track(prob, optax.sgd(0.1), prob.theta0, key=jr.key(1), n_steps=20, every=10)
        >>> hist.sharpness.shape
        (3, 1)
    """
    key = check_key(key)
    op = curvature_operator(problem, y0, group=group)
    y0 = op.theta
    n_steps = positive_int("n_steps", n_steps)
    every = positive_int("every", every, upper=n_steps, upper_name="n_steps")
    k = n_eigenpairs(k, op.dim)
    n_probes = positive_int("n_probes", n_probes)
    if n_probes < 2:
        raise ValueError(f"n_probes must be >= 2 for a standard error of Tr H, got {n_probes}.")
    with_noise = problem.data is not None if noise is None else bool(noise)
    if with_noise:
        problem._need_data("track(noise=True)")
        if k > max(problem.n_examples - 1, 1):
            raise ValueError(f"k={k} exceeds N-1={problem.n_examples - 1}, the most nonzero eigenvalues D can have.")
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    max_iter = resolve_max_iter(max_iter, k, op.dim)
    dyn = OptaxDynamics(problem, optimizer, batch_size, replacement)
    n_records = n_steps // every + 1
    measurement = _Curvature(k, n_probes, chunk_size, max_iter, _default_tol(y0.dtype), with_noise,
                             op.start, op.size)
    final, rows = train_and_measure(dyn, y0, key, measurement, n_records, every)
    return History(step=jnp.arange(n_records) * every, final=final, **rows)


def plot_history(history: History, axes=None, *, label: str | None = None, color=None):
    """Plot a :class:`History` on four axes: the loss;
    the top Hessian eigenvalues; the alignment ``Tr(HD)/(Tr H · Tr D)`` with a band of two
    standard errors; the slope of ``B·Var(g_B)`` on ``H`` and the top-``k`` eigenspace
    overlap. Call it once per run with the same ``axes`` to compare runs. Returns the axes."""
    import matplotlib.pyplot as plt

    if not isinstance(history, History):
        raise ValueError(f"history must be a History from so.curvature.track, got {type(history).__name__}.")
    cols = history.columns()
    if axes is None:
        _, axes = plt.subplots(2, 2, figsize=(9, 6), constrained_layout=True)
    ax = np.asarray(axes).ravel()
    step = cols["step"]
    tag = (lambda s: f"{label}: {s}") if label else (lambda s: s)
    color = ax[0].semilogy(step, cols["loss"], label=label, color=color)[0].get_color()
    ax[0].set(xlabel="step", ylabel="loss")
    n_eig = sum(1 for c in cols if c.startswith("sharpness_"))
    for j in range(1, n_eig + 1):
        ax[1].plot(step, cols[f"sharpness_{j}"], color=color, alpha=1.0 if j == 1 else 0.4,
                   label=tag(f"top {n_eig} eigenvalues of H") if j == 1 else None)
    ax[1].set(xlabel="step", ylabel="eigenvalues of H")
    r, se = cols["ratio"], cols["ratio_stderr"]
    ax[2].plot(step, r, color=color, label=label)
    ax[2].fill_between(step, r - 2 * se, r + 2 * se, color=color, alpha=0.25, lw=0)
    ax[2].set(xlabel="step", ylabel="Tr(HD) / (Tr H · Tr D)")
    ax[3].plot(step, cols["slope"], color=color, label=tag("slope of vᵀDv on λ"))
    ax[3].plot(step, cols["overlap"], color=color, ls=":", label=tag(f"top-{n_eig} overlap"))
    ax[3].axhline(1.0, color="0.6", lw=0.8)
    ax[3].set(xlabel="step", ylabel="D against H")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    return axes


register_result(History)
