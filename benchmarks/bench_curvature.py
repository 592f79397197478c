"""Curvature benchmark: sde_opt against PyHessian (torch, CPU) on the same MLP, in one process.

The model is the digits MLP of ``so.problems.mlp_digits`` (64 → hidden → 10, tanh,
cross-entropy), trained for a few hundred full-batch GD steps so that the top of the
spectrum is an outlier as in a real network; its weights and the same examples are copied
into a ``torch.nn.Sequential``, and both libraries work in float32 on the CPU.

Compared, each as PyHessian does it by default and as sde_opt does it by default:

* **top eigenvalue**: PyHessian's power iteration (``eigenvalues(top_n=1)``, ``tol=1e-3``)
  against ``so.hessian_eigs(k=1)`` (Lanczos with full reorthogonalisation, stopped when
  the residual is below √eps·‖H‖); and again with PyHessian at ``tol=1e-6``, where both
  agree with the float64 value to better than 1e-4 (PyHessian's default can stop a few
  percent low);
* **trace**: Hutchinson with the *same number of Rademacher probes* in both (PyHessian's
  ``trace(maxIter=n, tol=-1)`` so that it does not stop early); and at *equal standard
  error*: sde_opt's Hutch++ with ``n`` products against PyHessian's Hutchinson (its only
  estimator) with as many probes ``m`` as it needs for the same standard error,
  ``m = ⌈(σ₁ / SE₊₊)²⌉``, where σ₁ is the spread of PyHessian's own per-probe samples (a
  500-probe pilot) and SE₊₊ the median standard error of 5 pilot Hutch++ calls; both
  standard errors are reported. PyHessian's default ``trace()`` (stops when the running
  mean changes by < 0.1%) for reference;
* **density**: stochastic Lanczos quadrature, one probe and 100 steps in both
  (``density(iter=100, n_v=1)`` against ``so.curvature.hessian_density(n_probes=1, n_iter=100)``).
  PyHessian's ``density`` calls ``torch.eig``, which torch 2 removed; the benchmark
  installs a stand-in built on ``torch.linalg.eigh`` (the matrix is symmetric) and says so.

The reference values come from float64: the top eigenvalue by Lanczos to 1e-12, the
trace exactly (``d`` Hessian-vector products). Times are the median of ``--repeats`` runs,
interleaved, ending in ``block_until_ready`` / a Python float (both libraries start from
random vectors, so their work varies from run to run: the table counts the Hessian-vector
products each made, PyHessian's through a counting wrapper); PyHessian's times include
building its ``hessian`` object (one forward and backward with ``create_graph``), which
is part of every measurement it makes (sde_opt likewise linearises inside each call).
sde_opt's compile time (first call) is reported separately. Absolute times on a shared
machine are noise: read the ratios.

    pip install -e ".[bench]"
    python benchmarks/bench_curvature.py [--repeats 7] [--threads 1] [--markdown benchmarks/RESULTS_curvature.md]
    python benchmarks/bench_curvature.py --fast    # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import time
import warnings


def _threads_from_argv(argv) -> int | None:
    """``--threads N`` must reach XLA before jax is imported."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return None


_THREADS = _threads_from_argv(sys.argv[1:])
if _THREADS is not None:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'true' if _THREADS > 1 else 'false'}"
        + f" intra_op_parallelism_threads={_THREADS}"
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 only for the reference values

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import sde_opt as so  # noqa: E402


# ------------------------------------------------------------------------------- the model
def make_problem(hidden: int, n_examples: int, train_steps: int, seed: int = 0):
    """The digits MLP in float32, trained by full-batch GD so that λmax is an outlier."""
    base = so.problems.mlp_digits(key=jr.key(seed), hidden=(hidden,), n_examples=n_examples)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), base.unravel(base.theta0))
    data = {"x": base.data["x"].astype(jnp.float32), "y": base.data["y"]}
    prob = so.Problem(base.loss_fn, data, params=params)
    if train_steps:
        hist = so.curvature.track(prob, optax.sgd(0.5), prob.theta0, key=jr.key(seed + 1), n_steps=train_steps,
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
    x = torch.from_numpy(np.array(prob.data["x"], dtype=np.float32))  # a copy: never share JAX's buffers
    y = torch.from_numpy(np.array(prob.data["y"], dtype=np.int64))
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
HVPS = {"n": 0}  # Hessian-vector products PyHessian made (counted by a wrapper)


def count_pyhessian_hvps():
    import sys

    import pyhessian  # noqa: F401  (its package attribute `hessian` is the class, not the module)

    ph_module = sys.modules["pyhessian.hessian"]
    inner = ph_module.hessian_vector_product

    def counted(*args, **kwargs):
        HVPS["n"] += 1
        return inner(*args, **kwargs)

    ph_module.hessian_vector_product = counted


def pyhessian_runs(model, crit, x, y):
    """Each run returns ``(value, hvps)``."""
    import torch
    from pyhessian import hessian

    def build():
        model.zero_grad(set_to_none=True)  # PyHessian accumulates into .grad otherwise
        HVPS["n"] = 0
        return hessian(model, crit, data=(x, y), cuda=False)

    def top():
        return build().eigenvalues(top_n=1)[0][0], HVPS["n"]

    def trace_fixed(n):
        return lambda: (np.asarray(build().trace(maxIter=n, tol=-1.0)), HVPS["n"])

    def trace_default():
        return np.asarray(build().trace()), HVPS["n"]

    def density():
        return build().density(iter=100, n_v=1), HVPS["n"]

    torch.manual_seed(0)
    return top, trace_fixed, trace_default, density


def sde_opt_runs(prob, density_iter: int = 100):
    """Each run returns ``(value, hvps)`` (``density_iter``: SLQ steps of the density run)."""
    theta = prob.theta0

    def top(key, **kw):
        def run():  # what hessian_eigs(k=1) runs (kw: its options, e.g. min_iter)
            res = so.curvature.eigs(so.curvature.curvature_operator(prob, theta), 1, key=key, **kw)
            return float(res.values[0]), int(res.n_iter)

        return run

    def trace(key, n, estimator=None):
        def run():
            tr = so.hessian_trace(prob, theta, key=key, n_probes=n, estimator=estimator)
            return (float(tr.value), float(tr.stderr)), n

        return run

    def density(key):
        def run():
            dens = so.curvature.hessian_density(prob, theta, key=key, n_probes=1, n_iter=density_iter)
            return jax.block_until_ready(dens.nodes), density_iter

        return run

    return top, trace, density


def timed(fn):
    """One run, timed with the garbage collector paused (as ``timeit`` does): PyHessian's
    autograd graphs leave many objects behind, and a collection falling inside the next
    measurement, of either library, would be charged to it."""
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        value, hvps = fn()
        return time.perf_counter() - t, value, hvps
    finally:
        gc.enable()


def reference(prob):
    """float64 ground truth: λmax by Lanczos (tol 1e-12) and the exact trace."""
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), prob.unravel(prob.theta0))
    prob64 = so.Problem(prob.loss_fn, prob.data, params=p64)
    lam = float(so.hessian_eigs(prob64, prob64.theta0, 1, key=jr.key(0), tol=1e-12)[0][0])
    op = so.curvature.curvature_operator(prob64, prob64.theta0)
    d = prob64.theta0.shape[0]

    @jax.jit
    def diag_block(start):
        eye = jax.nn.one_hot(start + jnp.arange(256), d, dtype=jnp.float64)
        return jnp.sum(eye * jax.lax.map(op.linear(), eye))

    # blocks of 256 unit vectors (one_hot past d gives zero rows, which add nothing)
    trace = sum(float(diag_block(s)) for s in range(0, d, 256))
    return lam, trace


# ------------------------------------------------------------------------------- main
def med(xs):
    return float(np.median(xs))


def bench_size(hidden: int, n_examples: int, args) -> dict:
    """All comparisons for one MLP; returns the numbers for the report."""
    import torch

    prob = make_problem(hidden, n_examples, args.train_steps)
    model, crit, x, y = to_torch(prob)
    with torch.no_grad():
        torch_loss = float(crit(model(x), y))
    ph_top, ph_trace_fixed, ph_trace_default, ph_density = pyhessian_runs(model, crit, x, y)
    so_top, so_trace, so_density = sde_opt_runs(prob)
    keys = iter(jr.split(jr.key(42), 1000))

    def ph_top_tight():  # PyHessian asked for an accuracy like sde_opt's default
        return ph_top_with(maxIter=300, tol=1e-6)

    def ph_top_with(**kw):
        from pyhessian import hessian

        model.zero_grad(set_to_none=True)
        HVPS["n"] = 0
        return hessian(model, crit, data=(x, y), cuda=False).eigenvalues(top_n=1, **kw)[0][0], HVPS["n"]

    plus = so.curvature.HutchPlusPlus()
    compile_s = {}
    for name, fn in (("top", so_top(next(keys))), ("trace", so_trace(next(keys), args.probes)),
                     ("Hutch++", so_trace(next(keys), args.probes, plus)), ("density", so_density(next(keys)))):
        compile_s[name] = timed(fn)[0]
    # equal accuracy for the trace: PyHessian's probes for Hutch++'s standard error
    sigma1 = float(np.std(ph_trace_fixed(5 * args.probes)()[0], ddof=1))
    se_plus = med([so_trace(next(keys), args.probes, plus)()[0][1] for _ in range(5)])
    m_equal = max(2, int(np.ceil((sigma1 / se_plus) ** 2)))
    tasks = {
        "top eigenvalue, defaults": (ph_top, lambda: so_top(next(keys))),
        "top eigenvalue, PyHessian at tol=1e-6": (ph_top_tight, lambda: so_top(next(keys))),
        f"trace, Hutchinson, {args.probes} probes each": (ph_trace_fixed(args.probes),
                                                          lambda: so_trace(next(keys), args.probes)),
        "trace at equal standard error (PyHessian Hutchinson, sde_opt Hutch++)": (
            ph_trace_fixed(m_equal), lambda: so_trace(next(keys), args.probes, plus)),
        "density, SLQ 1 probe × 100 steps": (ph_density, lambda: so_density(next(keys))),
    }
    for ph_fn, _ in tasks.values():  # warm torch up too (its first backward passes allocate)
        ph_fn()
    runs = {name: {"ph": [], "so": []} for name in tasks}
    for _ in range(args.repeats):  # every task once per round, the two libraries interleaved
        for name, (ph_fn, so_fn) in tasks.items():
            runs[name]["ph"].append(timed(ph_fn))
            runs[name]["so"].append(timed(so_fn()))
    default_trace = [timed(ph_trace_default) for _ in range(args.repeats)]
    lam_ref, tr_ref = reference(prob)
    return dict(hidden=hidden, n_examples=n_examples, d=int(prob.theta0.shape[0]), runs=runs, compile_s=compile_s,
                default_trace=default_trace, lam_ref=lam_ref, tr_ref=tr_ref, sigma1=sigma1, m_equal=m_equal,
                losses=(float(prob.loss(prob.theta0)), torch_loss))


def report(results: list, args, shim: bool) -> str:
    import torch

    lines = [
        "# Curvature benchmark: sde_opt against PyHessian",
        "",
        f"`python benchmarks/bench_curvature.py --sizes {args.sizes} --repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "") + "`, "
        f"{datetime.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        f"jobs, {torch.get_num_threads()} torch threads; JAX {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__}, PyHessian 0.1; float32 in both.",
        "",
        "The digits MLP 64 → hidden → 10 (tanh, cross-entropy) after "
        f"{args.train_steps} GD steps, its weights and examples copied into torch. Times are medians over "
        f"{args.repeats} rounds (range in brackets), the libraries interleaved; HVPs = Hessian-vector products "
        "used (medians; both start from random vectors). PyHessian's times include building its `hessian` "
        "object (one forward and backward with `create_graph`). sde_opt's compile time is excluded and listed "
        "below.",
        "",
        "| MLP | task | PyHessian | HVPs | sde_opt | HVPs | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        mlp = f"{r['hidden']} hidden, N={r['n_examples']}, d={r['d']}"
        for name, run in r["runs"].items():
            tp, ts = [t for t, _, _ in run["ph"]], [t for t, _, _ in run["so"]]
            hp, hs = [h for _, _, h in run["ph"]], [h for _, _, h in run["so"]]
            lines.append(
                f"| {mlp} | {name} | {med(tp) * 1e3:.1f} ms ({min(tp) * 1e3:.0f}–{max(tp) * 1e3:.0f}) | {med(hp):.0f} "
                f"| {med(ts) * 1e3:.1f} ms ({min(ts) * 1e3:.0f}–{max(ts) * 1e3:.0f}) | {med(hs):.0f} "
                f"| **{med(tp) / med(ts):.1f}×** |"
            )
    lines += [
        "",
        "**Agreement.** References in float64: λmax by Lanczos to 1e-12, the trace exactly from d HVPs. "
        "Relative errors of λmax are medians over the rounds (worst in brackets); traces are the first round's "
        "± its standard error, then [the median standard error over the rounds]; PyHessian's standard error is "
        "its samples' standard deviation over √probes.",
        "",
        "| MLP | λmax reference | PyHessian default | PyHessian tol=1e-6 | sde_opt default "
        "| trace reference | PyHessian, n probes | sde_opt Hutchinson, n | PyHessian, m probes | sde_opt Hutch++, n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lam = r["lam_ref"]

        def err(run):
            errs = [abs(v - lam) / abs(lam) for _, v, _ in run]
            return f"{med(errs):.1e} ({max(errs):.1e})"

        runs = r["runs"]
        cells = []
        for tname in (n for n in runs if n.startswith("trace")):
            ph = [(np.mean(s), np.std(s, ddof=1) / np.sqrt(len(s))) for _, s, _ in runs[tname]["ph"]]
            so_ = [v for _, v, _ in runs[tname]["so"]]
            cells += [f"{v[0][0]:.4f} ± {v[0][1]:.4f} [{med([se for _, se in v]):.4f}]" for v in (ph, so_)]
        lines.append(
            f"| d={r['d']} | {lam:.6f} | {err(runs['top eigenvalue, defaults']['ph'])} "
            f"| {err(runs['top eigenvalue, PyHessian at tol=1e-6']['ph'])} | {err(runs['top eigenvalue, defaults']['so'])} "
            f"| {r['tr_ref']:.4f} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    for r in results:
        td = [t for t, _, _ in r["default_trace"]]
        c = r["compile_s"]
        lines.append(
            f"d={r['d']}: losses {r['losses'][0]:.4f} (JAX) and {r['losses'][1]:.4f} (torch, copied weights); "
            f"sde_opt compile {c['top']:.1f} s (eigenvalue), {c['trace']:.1f} s (trace), {c['Hutch++']:.1f} s "
            f"(Hutch++), {c['density']:.1f} s (density); PyHessian's per-probe spread σ₁ = {r['sigma1']:.3f}, so "
            f"m = {r['m_equal']} probes for Hutch++'s standard error; PyHessian's default `trace()` (stops when the running mean moves < 0.1%) took "
            f"{med(td) * 1e3:.0f} ms for {med([h for _, _, h in r['default_trace']]):.0f} probes."
        )
    if shim:
        lines += ["", "PyHessian's `density()` calls `torch.eig`, removed in torch 2; it ran with a stand-in "
                      "built on `torch.linalg.eigh` (installed by this script)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16x256,32x512,64x1024",
                        help="hidden x examples, comma separated (16x256: notebook 02's MLP; 32x512: mlp_digits' default)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, one round (smoke test)")
    parser.add_argument("--markdown", default=None, help="also write the report to this file")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both libraries (torch.set_num_threads and XLA's CPU flags); default: all")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.fast:
        args.sizes, args.train_steps, args.probes, args.repeats = "8x128", 20, 10, 1
    warnings.filterwarnings("ignore", category=UserWarning)  # torch's only_inputs deprecation
    shim = install_torch_eig_shim()
    count_pyhessian_hvps()
    results = []
    for size in args.sizes.split(","):
        hidden, n = (int(v) for v in size.lower().split("x"))
        results.append(bench_size(hidden, n, args))
    text = report(results, args, shim)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
