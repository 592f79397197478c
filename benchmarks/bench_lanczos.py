"""Lanczos benchmark: the package's one Lanczos (fixed-step and converged modes) against
matfree's Lanczos, jax's LOBPCG, and the second copy it replaced, on the digits MLP, in one
process (float32, CPU).

Each method gets the top Hessian eigenvalue from Hessian-vector products of the same
``Problem``: a fixed budget of ``--steps`` products for the fixed-step methods, LOBPCG
with as many iterations. Compiled once; times are medians of ``--repeats`` interleaved
calls ending in ``block_until_ready``. The error is relative to a converged run (residual
1e-6).
Also: one HVP through our operator against the same product behind a
``lineax.FunctionLinearOperator``. Absolute times on a shared machine are noise: read the
ratios.

    python benchmarks/bench_lanczos.py [--steps 30] [--repeats 15]
    (matfree is optional: pip install matfree)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.experimental.sparse.linalg
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np

import sde_opt as so


def previous_lanczos_top(mv, v0, n_iter: int):
    """The second copy that lived in _edge_of_stability.py before the merge (for the table)."""
    n, dtype = v0.shape[0], v0.dtype
    tiny = jnp.finfo(dtype).tiny ** 0.5
    Q = jnp.zeros((n_iter + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(j, c):
        Q, alpha, beta = c
        q = Q[j]
        w = mv(q)
        a = q @ w
        w = w - Q.T @ (Q @ w)
        w = w - Q.T @ (Q @ w)
        b = jnp.linalg.norm(w)
        ok = b > tiny * jnp.maximum(jnp.abs(a), 1.0)
        Q = Q.at[j + 1].set(jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0))
        return Q, alpha.at[j].set(a), beta.at[j].set(jnp.where(ok, b, 0.0))

    Q, alpha, beta = jax.lax.fori_loop(0, n_iter, body, (Q, jnp.zeros(n_iter, dtype), jnp.zeros(n_iter, dtype)))
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    return jnp.linalg.eigvalsh(t)[-1]


def compile_time(f, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


def interleaved(fs, *args, repeats):
    """Median wall time of each function, the calls interleaved so that load affects all alike."""
    ts = {name: [] for name in fs}
    for _ in range(repeats):
        for name, f in fs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            ts[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in ts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=31)
    args = ap.parse_args()
    m = args.steps

    prob = so.problems.mlp_digits(key=jr.key(0))
    theta = prob.theta0
    ref = float(so.hessian_eigs(prob, theta, 1, key=jr.key(0), tol=1e-6, max_iter=300)[0][0])
    d = theta.shape[0]
    v0 = jr.normal(jr.key(1), (d,), theta.dtype)
    hvp = lambda v: prob.hvp(theta, v)  # noqa: E731
    op = so.curvature.curvature_operator(prob, theta)

    methods = {
        "sde_opt fixed-step (lambda_max)": jax.jit(lambda v: so.curvature.lambda_max(prob, theta, v0=v, n_iter=m)[0]),
        "sde_opt converged (eigs, k=1)": jax.jit(
            lambda v: so.curvature.eigs(op, 1, key=jr.key(2), v0=v).values),
        "previous second copy": jax.jit(lambda v: previous_lanczos_top(hvp, v, m)),
        "jax lobpcg_standard": jax.jit(lambda v: jax.experimental.sparse.linalg.lobpcg_standard(
            jax.vmap(hvp, in_axes=1, out_axes=1), v[:, None], m)[0]),
    }
    try:
        from matfree import decomp, eig

        solve = eig.eigh_partial(decomp.tridiag_sym(m, reortho="full"))
        methods["matfree eigh_partial(tridiag_sym, full reortho)"] = jax.jit(
            lambda v: jnp.max(solve(lambda x: prob.hvp(theta, x), v)[0]))
    except ImportError:
        print("(matfree not installed: skipped)")

    compile_s = {name: compile_time(f, v0) for name, f in methods.items()}
    times = interleaved(methods, v0, repeats=args.repeats)
    base = times[next(iter(methods))]
    print(f"digits MLP, d = {d}, {m} HVPs, float32, lambda_max = {ref:.6f}")
    print(f"{'method':50s} {'median ms':>10s} {'vs ours':>8s} {'compile s':>10s} {'rel. error':>11s}")
    for name, f in methods.items():
        err = abs(float(np.asarray(f(v0)).reshape(-1)[0]) - ref) / ref
        print(f"{name:50s} {1e3 * times[name]:10.2f} {times[name] / base:8.2f} {compile_s[name]:10.2f} {err:11.1e}")

    lxop = lx.FunctionLinearOperator(op.linear(), jax.ShapeDtypeStruct((d,), theta.dtype), lx.symmetric_tag)
    hvps = {"ours": jax.jit(lambda v: op.linear()(v)), "lineax": jax.jit(lambda v: lxop.mv(v))}
    for f in hvps.values():
        compile_time(f, v0)
    t = interleaved(hvps, v0, repeats=5 * args.repeats)
    t_ours, t_lx = t["ours"], t["lineax"]
    print(f"one HVP: our operator {1e3 * t_ours:.3f} ms, lineax FunctionLinearOperator {1e3 * t_lx:.3f} ms "
          f"(ratio {t_lx / t_ours:.2f})")


if __name__ == "__main__":
    main()
