"""Curvature benchmark: sde_opt against PyHessian (torch, CPU) on the same MLP, in one process.

The model is the digits MLP of ``so.problems.mlp_digits`` (64 → hidden → 10, tanh,
cross-entropy), trained for a few hundred full-batch GD steps so that the top of the
spectrum is an outlier as in a real network; its weights and the same examples are copied
into a ``torch.nn.Sequential``, and both libraries work in float32 on the CPU.

Compared, each as PyHessian does it by default and as sde_opt does it by default:

* **top eigenvalue**: PyHessian's power iteration (``eigenvalues(top_n=1)``, ``tol=1e-3``)
  against ``so.hessian_eigs(k=1)`` (Lanczos with full reorthogonalisation, stopped when
  the residual is below √eps·‖H‖);
* **trace**: Hutchinson with the *same number of Rademacher probes* in both (PyHessian's
  ``trace(maxIter=n, tol=-1)`` so that it does not stop early), and PyHessian's default
  ``trace()`` (stops when the running mean changes by < 0.1%) for reference;
* **density**: stochastic Lanczos quadrature, one probe and 100 steps in both
  (``density(iter=100, n_v=1)`` against ``so.hessian_density(n_probes=1, n_iter=100)``).
  PyHessian's ``density`` calls ``torch.eig``, which torch 2 removed; the benchmark
  installs a stand-in built on ``torch.linalg.eigh`` (the matrix is symmetric) and says so.

The reference values come from float64: the top eigenvalue by Lanczos to 1e-12, the
trace exactly (``d`` Hessian-vector products). Times are the best of ``--repeats`` runs,
interleaved, ending in ``block_until_ready`` / a Python float; PyHessian's times include
building its ``hessian`` object (one forward and backward with ``create_graph``), which
is part of every measurement it makes (sde_opt likewise linearises inside each call).
sde_opt's compile time (first call) is reported separately. Absolute times on a shared
machine are noise: read the ratios.

    pip install -e ".[bench]"
    python benchmarks/bench_curvature.py [--repeats 5] [--markdown benchmarks/RESULTS_curvature.md]
    python benchmarks/bench_curvature.py --fast    # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)  # float64 only for the reference values

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import sde_opt as so


# ------------------------------------------------------------------------------- the model
def make_problem(hidden: int, n_examples: int, train_steps: int, seed: int = 0):
    """The digits MLP in float32, trained by full-batch GD so that λmax is an outlier."""
    base = so.problems.mlp_digits(key=jr.key(seed), hidden=(hidden,), n_examples=n_examples)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), base.unravel(base.theta0))
    data = {"x": base.data["x"].astype(jnp.float32), "y": base.data["y"]}
    prob = so.Problem(base.loss_fn, data, params=params)
    if train_steps:
        hist = so.track(prob, optax.sgd(0.5), prob.theta0, key=jr.key(seed + 1), n_steps=train_steps,
                        every=train_steps, k=1, n_probes=2, noise=False)
        prob = so.Problem(base.loss_fn, data, params=prob.unravel(hist.final))
    return prob


def to_torch(prob):
    import torch

    p = prob.unravel(prob.theta0)
    (w1, b1), (w2, b2) = ((np.asarray(layer["w"]), np.asarray(layer["b"])) for layer in p)
    model = torch.nn.Sequential(torch.nn.Linear(*w1.shape), torch.nn.Tanh(), torch.nn.Linear(*w2.shape))
    with torch.no_grad():
        for lin, w, b in ((model[0], w1, b1), (model[2], w2, b2)):
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
    x = torch.from_numpy(np.asarray(prob.data["x"], dtype=np.float32))
    y = torch.from_numpy(np.asarray(prob.data["y"], dtype=np.int64))
    return model, torch.nn.CrossEntropyLoss(), x, y


def install_torch_eig_shim():
    """PyHessian's density() calls torch.eig (removed in torch 2); give it a symmetric stand-in
    with the old return layout: eigenvalues as (n, 2) [real, imag] and eigenvectors as columns."""
    import torch

    try:
        torch.eig(torch.eye(1), eigenvectors=True)
        return False
    except (AttributeError, RuntimeError):
        pass

    def eig(t, eigenvectors=False):
        vals, vecs = torch.linalg.eigh(t)
        return torch.stack([vals, torch.zeros_like(vals)], dim=1), vecs

    torch.eig = eig
    return True


# ------------------------------------------------------------------------------- the runs
def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def pyhessian_runs(model, crit, x, y):
    import torch
    from pyhessian import hessian

    def build():
        model.zero_grad(set_to_none=True)  # PyHessian accumulates into .grad otherwise
        return hessian(model, crit, data=(x, y), cuda=False)

    def top():
        return build().eigenvalues(top_n=1)[0][0]

    def trace_fixed(n):
        return lambda: np.asarray(build().trace(maxIter=n, tol=-1.0))

    def trace_default():
        return np.asarray(build().trace())

    def density():
        return build().density(iter=100, n_v=1)

    torch.manual_seed(0)
    return top, trace_fixed, trace_default, density


def sde_opt_runs(prob):
    theta = prob.theta0

    def top(key):
        return lambda: float(so.hessian_eigs(prob, theta, 1, key=key)[0][0])

    def trace(key, n):
        def run():
            tr = so.hessian_trace(prob, theta, key=key, n_probes=n)
            return float(tr.value), float(tr.stderr)

        return run

    def density(key):
        return lambda: jax.block_until_ready(so.hessian_density(prob, theta, key=key, n_probes=1, n_iter=100).nodes)

    return top, trace, density


def reference(prob):
    """float64 ground truth: λmax by Lanczos (tol 1e-12) and the exact trace."""
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), prob.unravel(prob.theta0))
    prob64 = so.Problem(prob.loss_fn, prob.data, params=p64)
    lam = float(so.hessian_eigs(prob64, prob64.theta0, 1, key=jr.key(0), tol=1e-12)[0][0])
    op = so.curvature_operator(prob64, prob64.theta0)
    d = prob64.theta0.shape[0]

    @jax.jit
    def diag_block(start):
        eye = jax.nn.one_hot(start + jnp.arange(256), d, dtype=jnp.float64)
        return jnp.sum(eye * jax.lax.map(op.linear(), eye))

    # blocks of 256 unit vectors (one_hot past d gives zero rows, which add nothing)
    trace = sum(float(diag_block(s)) for s in range(0, d, 256))
    return lam, trace


# ------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--n-examples", type=int, default=1024)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--markdown", default=None, help="write the table to this file")
    args = parser.parse_args(argv)
    if args.fast:
        args.hidden, args.n_examples, args.train_steps, args.probes, args.repeats = 8, 128, 20, 10, 1

    import torch

    warnings.filterwarnings("ignore", category=UserWarning)  # torch's only_inputs deprecation
    prob = make_problem(args.hidden, args.n_examples, args.train_steps)
    d = int(prob.theta0.shape[0])
    model, crit, x, y = to_torch(prob)
    with torch.no_grad():
        torch_loss = float(crit(model(x), y))
    jax_loss = float(prob.loss(prob.theta0))
    shim = install_torch_eig_shim()

    ph_top, ph_trace_fixed, ph_trace_default, ph_density = pyhessian_runs(model, crit, x, y)
    so_top, so_trace, so_density = sde_opt_runs(prob)
    keys = iter(jr.split(jr.key(42), 1000))

    # compile sde_opt once (timed), then time everything interleaved
    compile_s = {}
    for name, fn in (("top", so_top(next(keys))), ("trace", so_trace(next(keys), args.probes)),
                     ("density", so_density(next(keys)))):
        t = time.perf_counter()
        fn()
        compile_s[name] = time.perf_counter() - t

    rows = {}
    ph_top_vals, so_top_vals = [], []
    t_ph, t_so = [], []
    for _ in range(args.repeats):
        t, v = best_of(ph_top, 1)
        t_ph.append(t), ph_top_vals.append(v)
        t, v = best_of(so_top(next(keys)), 1)
        t_so.append(t), so_top_vals.append(v)
    rows["top eigenvalue"] = (min(t_ph), min(t_so))

    t_ph, t_so, ph_tr, so_tr = [], [], [], []
    for _ in range(args.repeats):
        t, v = best_of(ph_trace_fixed(args.probes), 1)
        t_ph.append(t), ph_tr.append(v)
        t, v = best_of(so_trace(next(keys), args.probes), 1)
        t_so.append(t), so_tr.append(v)
    rows[f"trace, {args.probes} probes each"] = (min(t_ph), min(t_so))

    t_def, ph_def = best_of(ph_trace_default, args.repeats)

    t_ph, t_so = [], []
    for _ in range(args.repeats):
        t_ph.append(best_of(ph_density, 1)[0])
        t_so.append(best_of(so_density(next(keys)), 1)[0])
    rows["density (SLQ, 1 probe × 100 steps)"] = (min(t_ph), min(t_so))

    lam_ref, tr_ref = reference(prob)

    # ------------------------------------------------------------------- report
    def rel(a):
        return abs(a - lam_ref) / abs(lam_ref)

    lam_gap = abs(np.median(so_top_vals) - np.median(ph_top_vals)) / abs(np.median(ph_top_vals))
    ph_tr_vals = [float(np.mean(s)) for s in ph_tr]
    ph_tr_se = [float(np.std(s, ddof=1) / np.sqrt(len(s))) for s in ph_tr]
    lines = [
        "# Curvature benchmark: sde_opt against PyHessian",
        "",
        f"Generated by `python benchmarks/bench_curvature.py --repeats {args.repeats}` on "
        f"{datetime.date.today().isoformat()}; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, JAX {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__}, float32 in both.",
        "",
        f"Model: digits MLP 64 → {args.hidden} → 10 (tanh, cross-entropy), d = {d} parameters, "
        f"N = {args.n_examples} examples, after {args.train_steps} GD steps (loss {jax_loss:.4f} in JAX, "
        f"{torch_loss:.4f} in torch with the copied weights). Times: best of {args.repeats}, interleaved; "
        "PyHessian's include building its `hessian` object.",
        "",
        "| task | PyHessian | sde_opt | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, (a, b) in rows.items():
        lines.append(f"| {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.1f}× |")
    lines += [
        "",
        f"sde_opt compile times (first call, not in the table): top eigenvalue {compile_s['top']:.1f} s, "
        f"trace {compile_s['trace']:.1f} s, density {compile_s['density']:.1f} s. "
        f"PyHessian's default `trace()` (stops when the running mean moves < 0.1%) took "
        f"{t_def * 1e3:.1f} ms for {len(ph_def)} probes: {float(np.mean(ph_def)):.4f}.",
        "",
        "**Agreement** (float64 reference: λmax by Lanczos to 1e-12, the trace exactly from d HVPs):",
        "",
        "| quantity | reference | PyHessian | sde_opt |",
        "|---|---:|---:|---:|",
        f"| λmax | {lam_ref:.6f} | {np.median(ph_top_vals):.6f} (rel. err. {rel(np.median(ph_top_vals)):.1e}; "
        f"{min(map(rel, ph_top_vals)):.1e}–{max(map(rel, ph_top_vals)):.1e} over runs) | "
        f"{np.median(so_top_vals):.6f} (rel. err. {rel(np.median(so_top_vals)):.1e}; "
        f"{min(map(rel, so_top_vals)):.1e}–{max(map(rel, so_top_vals)):.1e}) |",
        f"| trace ({args.probes} probes) | {tr_ref:.4f} | {ph_tr_vals[0]:.4f} ± {ph_tr_se[0]:.4f} | "
        f"{so_tr[0][0]:.4f} ± {so_tr[0][1]:.4f} |",
        "",
        f"sde_opt's λmax differs from PyHessian's by {lam_gap:.2%} (median over runs). Trace z-scores against the exact trace, over the repeats: PyHessian "
        + ", ".join(f"{(v - tr_ref) / s:+.1f}" for v, s in zip(ph_tr_vals, ph_tr_se))
        + "; sde_opt " + ", ".join(f"{(v - tr_ref) / s:+.1f}" for v, s in so_tr) + ".",
    ]
    if shim:
        lines += ["", "PyHessian's `density()` calls `torch.eig`, removed in torch 2; it ran with a stand-in "
                      "built on `torch.linalg.eigh` (installed by this script)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
