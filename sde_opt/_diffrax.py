"""Hand a continuous model to diffrax: any solver, adaptive steps, Brownian trees."""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from ._checks import positive, positive_int
from ._dynamics import AbstractContinuous
from ._engine import Ensemble, check_key, check_start, path_keys


def solve_diffrax(
    dyn: AbstractContinuous,
    y0,
    *,
    key,
    n_paths: int,
    t1,
    ts=None,
    dt0=None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    brownian_tol=None,
    max_steps: int = 1_000_000,
) -> Ensemble:
    """Solve ``dyn`` with ``dfx.diffeqsolve``, one call per path under ``vmap``, the way
    diffrax documents ensembles: each path gets a ``VirtualBrownianTree`` keyed by
    ``fold_in(key, i)``. An ODE (``GradientFlow``) needs no Brownian motion and may use an
    adaptive controller (default ``Tsit5`` + ``PIDController(1e-6, 1e-8)``).

    For Monte Carlo prefer :func:`sde_opt.simulate`, 20–100× faster in `benchmarks/`; this is the
    reference for high-order and adaptive solves.
    """
    if not isinstance(dyn, AbstractContinuous):
        raise ValueError(
            f"solve_diffrax integrates continuous models (GradientFlow, SGDSDE, ...); {type(dyn).__name__} is a "
            "discrete algorithm: run it with so.simulate."
        )
    key = check_key(key)
    n_paths = positive_int("n_paths", n_paths)
    t1 = float(positive("t1", t1))
    y0 = check_start(dyn, y0, n_paths)
    if ts is None:
        ts = jnp.linspace(0.0, t1, 101)
    ts = jnp.asarray(ts, dtype=y0.dtype)
    # models with buffers (momentum, second moments) integrate their full state; ys are positions
    state_size = jax.eval_shape(dyn.init, y0[0]).shape[0]
    is_ode = dyn.n_normals(state_size) == 0
    if solver is None:
        solver = dfx.Tsit5() if is_ode else dfx.Euler()
    if stepsize_controller is None:
        stepsize_controller = (
            dfx.PIDController(rtol=1e-6, atol=1e-8) if is_ode and dt0 is None else dfx.ConstantStepSize()
        )
    if dt0 is None and isinstance(stepsize_controller, dfx.ConstantStepSize):
        raise ValueError("dt0 is required with a constant step size; pass dt0=... or an adaptive controller.")
    r = dyn.n_normals(state_size)
    tol = (dt0 / 2 if dt0 is not None else 1e-3) if brownian_tol is None else brownian_tol

    ys = _solve_paths(dyn, y0, path_keys(key, 0, n_paths), ts, t1, dt0, solver, stepsize_controller, tol,
                      max_steps, r, is_ode)
    diverged = ~jnp.all(jnp.isfinite(ys[:, -1]), axis=-1)
    return Ensemble(ts=ts, ys=ys, diverged=diverged)


@eqx.filter_jit
def _solve_paths(dyn, y0, keys, ts, t1, dt0, solver, stepsize_controller, tol, max_steps: int, r: int, is_ode: bool):
    """All paths in one compiled call, cached across calls (arrays traced, the rest static)."""

    def one(y, k):
        bm = None if is_ode else dfx.VirtualBrownianTree(0.0, t1, tol=tol, shape=(r,), key=k)
        sol = dfx.diffeqsolve(
            dyn.terms(bm), solver, 0.0, t1, dt0, dyn.init(y),
            saveat=dfx.SaveAt(ts=ts), stepsize_controller=stepsize_controller, max_steps=max_steps,
        )
        return jax.vmap(dyn.position)(sol.ys)

    return jax.vmap(one)(y0, keys)


@eqx.filter_jit
def _flow_solve(flow, theta0, ts, rtol: float, atol: float, max_steps: int):
    sol = dfx.diffeqsolve(
        flow.terms(), dfx.Tsit5(), 0.0, ts[-1], None, flow.init(theta0), saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol), max_steps=max_steps, throw=False,
    )
    return jax.vmap(flow.position)(sol.ys), sol.stats["num_steps"]


def flow_path(flow: AbstractContinuous, theta0, ts, *, rtol: float = 1e-6, atol: float = 1e-8,
              max_steps: int = 200_000):
    """The reference solution of a noiseless continuous model ``dθ/dt = b(θ)`` from
    ``theta0`` (gradient flow ``b = −∇L``, a modified flow, or an optimizer's flow with its
    state, of which ``ys`` are the positions): diffrax's Tsit5 (Tsitouras
    2011, order 5) with a PID step-size controller at ``rtol``/``atol``, saved at the times
    ``ts`` (from ``t = 0``). An explicit solver needs ever smaller steps as the flow
    sharpens; when ``max_steps`` runs out, the times not reached are ``nan``.

    Returns ``(ys (R, d), reached (R,) bool, n_solver_steps)``; ``reached`` is false from
    the first time that was not reached on.
    """
    if flow.n_normals(jax.eval_shape(flow.init, theta0).shape[0]) != 0:
        raise ValueError(f"{type(flow).__name__} has noise; flow_path solves noiseless models such as so.GradientFlow.")
    ts = jnp.asarray(ts, dtype=theta0.dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"ts must be a non-empty 1-D grid, got shape {ts.shape}.")
    t1 = float(ts[-1])
    positive("ts[-1]", t1 if t1 > 0 else -1.0)
    ys, n = _flow_solve(flow, theta0, ts, float(rtol), float(atol), positive_int("max_steps", max_steps))
    reached = jnp.cumprod(jnp.all(jnp.isfinite(ys), axis=-1)).astype(bool)  # once it stopped, later saves are invalid
    return jnp.where(reached[:, None], ys, jnp.nan), reached, n
