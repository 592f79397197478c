"""Curvature on a CNN: sde_opt against PyHessian and hessian-eigenthings (torch, CPU), in one process.

The model is the Flax CNN of ``bench_networks_noise.py`` (3×3 conv 3→16, 3×3 conv 16→32,
2×2 average pool, dense 2048→71, dense 71→10, ReLU, cross-entropy; 151,287 parameters) on
``--n-examples`` synthetic 16×16×3 images with 10 random labels, trained by a few hundred
mini-batch SGD steps in JAX so that the top of the spectrum is an outlier as in a real
network. Its weights and the same images are copied into an equivalent ``torch.nn.Module``
(NHWC → NCHW, HWIO kernels → OIHW, the flatten before the first dense layer in Flax's
H, W, C order); the two losses are checked to agree to float32 tolerance before anything is
timed. Everything is float32 on the CPU, with the same number of threads in both
(``--threads``, default 2: ``torch.set_num_threads`` and XLA's CPU flags).

The methodology is ``bench_curvature.py``'s (the MLP against PyHessian):

* **top eigenvalue at equal accuracy**: ``so.hessian_eigs(k=1)`` (Lanczos, stopped at a
  residual below √eps·‖H‖) against PyHessian's power iteration (``eigenvalues(top_n=1)``,
  its default ``tol=1e-3`` and ``tol=1e-6``) and hessian-eigenthings' Lanczos
  (``lanczos(op, k=1)``: its default ``max_iter = 2k = 2`` steps, and 20 steps); errors
  against a float64 Lanczos reference (tol 1e-10);
* **trace at equal standard error**: sde_opt's Hutch++ with ``n`` products against
  PyHessian's Hutchinson (its only estimator) with as many probes ``m`` as it needs for the
  same standard error, ``m = ⌈(σ₁ / SE₊₊)²⌉`` (σ₁: the per-probe spread of Rademacher
  ``zᵀHz``, from a pilot of sde_opt's Hutchinson — the same samples PyHessian draws —,
  SE₊₊: the median standard error of 2 pilot Hutch++ calls); sde_opt's Hutchinson with the
  same ``m``; hessian-eigenthings' ``trace(method="hutch++", num_matvecs=n)`` and
  ``trace(method="hutchinson", num_matvecs=m)``;
* **density**: stochastic Lanczos quadrature, one probe, ``--density-iter`` steps in both
  (``so.curvature.hessian_density(n_probes=1, n_iter=...)`` against PyHessian's
  ``density(iter=..., n_v=1)``; PyHessian calls ``torch.eig``, removed in torch 2, and runs
  with ``bench_curvature.py``'s stand-in on ``torch.linalg.eigh``);
* **one Hessian-vector product** in each library, the unit of cost: sde_opt's compiled
  ``op.mv`` (the linearisation inside the call, as each of its estimators does it),
  PyHessian's ``hessian_vector_product`` on its retained graph (building the graph is one
  forward and backward more, charged once per PyHessian call), hessian-eigenthings'
  ``HessianOperator.matvec`` (a forward, a backward with ``create_graph`` and a second
  backward per product, its only mode).

Times are medians over ``--repeats`` rounds, every task once per round and the libraries
interleaved, the garbage collector paused in each measurement; HVPs are counted (PyHessian
and hessian-eigenthings through counting wrappers). sde_opt's compile time (first call) is
listed separately. The report is rewritten after every round (``--markdown``), so a run cut
short still leaves a table. Absolute times on a shared machine are noise: read the ratios;
the load average at the start and end and the peak resident memory are in the report.

    pip install -e ".[bench,nets]"
    python benchmarks/bench_networks.py [--n-examples 2048] [--repeats 3] [--markdown benchmarks/RESULTS_networks_curvature.md]
    python benchmarks/bench_networks.py --fast    # tiny sizes, a smoke test (about 2 minutes: compiles)
    python benchmarks/bench_networks.py --hvp-parts --repeats 3    # where one sde_opt product's time goes
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import resource
import sys
import time
import warnings

if "--threads" not in " ".join(sys.argv[1:]):  # bench_curvature reads --threads from argv before importing jax
    sys.argv.append("--threads=2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_curvature import HVPS, count_pyhessian_hvps, install_torch_eig_shim, med, sde_opt_runs, timed  # noqa: E402
from bench_networks_noise import _cnn, _xent  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import sde_opt as so  # noqa: E402

EHVPS = {"n": 0}  # hessian-eigenthings' products (counted by a wrapper)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------- the model
def make_problem(n_examples: int, train_steps: int, batch_size: int, lr: float, seed: int = 0):
    """The CNN in float32 after ``train_steps`` mini-batch SGD steps; returns (net, problem, train log)."""
    from flax import linen as nn

    net, variables, data = _cnn(nn, n_examples)
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), variables)
    data = {"x": data["x"].astype(jnp.float32), "y": data["y"]}

    def batch_loss(v, x, y):
        logits = net.apply(v, x)
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])

    opt = optax.sgd(lr)

    @jax.jit
    def step(v, state, key):
        idx = jr.choice(key, n_examples, (min(batch_size, n_examples),), replace=False)
        loss, g = jax.value_and_grad(batch_loss)(v, data["x"][idx], data["y"][idx])
        upd, state = opt.update(g, state, v)
        return optax.apply_updates(v, upd), state, loss

    full = jax.jit(batch_loss)
    log = {"loss0": float(full(variables, data["x"], data["y"]))}
    t0 = time.perf_counter()
    state = opt.init(variables)
    for key in jr.split(jr.key(seed + 1), train_steps):
        variables, state, _ = step(variables, state, key)
    log["loss1"] = float(full(variables, data["x"], data["y"]))
    log["train_s"] = time.perf_counter() - t0
    loss = lambda var, ex: _xent(net.apply(var, ex["x"][None])[0], ex["y"])  # noqa: E731
    return net, so.Problem(loss, data, params=variables), log


def to_torch(prob):
    """The same CNN in torch with the weights copied: NCHW images, OIHW kernels, and the
    flatten in Flax's (H, W, C) order."""
    import torch
    from torch import nn

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)  # Flax "SAME" for a 3×3 stride-1 kernel
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.pool = nn.AvgPool2d(2, 2)
            self.fc1 = nn.Linear(2048, 71)
            self.fc2 = nn.Linear(71, 10)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = self.pool(x).permute(0, 2, 3, 1).flatten(1)  # NCHW → NHWC before the flatten
            return self.fc2(torch.relu(self.fc1(x)))

    p = prob.unravel(prob.theta0)
    p = p.get("params", p)  # Problem may keep or drop Flax's "params" level
    model = CNN()
    with torch.no_grad():
        for name, conv in (("Conv_0", model.conv1), ("Conv_1", model.conv2)):
            conv.weight.copy_(torch.from_numpy(np.array(p[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.array(p[name]["bias"])))
        for name, lin in (("Dense_0", model.fc1), ("Dense_1", model.fc2)):
            lin.weight.copy_(torch.from_numpy(np.array(p[name]["kernel"]).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.array(p[name]["bias"])))
    x = torch.from_numpy(np.array(prob.data["x"], dtype=np.float32).transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(np.array(prob.data["y"], dtype=np.int64))
    return model, torch.nn.CrossEntropyLoss(), x, y


# ------------------------------------------------------------------------------- the runs
def count_eigenthings_hvps(op):
    inner = op.matvec

    def counted(v):
        EHVPS["n"] += 1
        return inner(v)

    op.matvec = counted
    return op


def pyhessian_runs(model, crit, x, y, density_iter: int):
    """Each run returns ``(value, hvps)``."""
    from pyhessian import hessian

    def build():
        model.zero_grad(set_to_none=True)  # PyHessian accumulates into .grad otherwise
        HVPS["n"] = 0
        return hessian(model, crit, data=(x, y), cuda=False)

    def top(**kw):
        return lambda: (build().eigenvalues(top_n=1, **kw)[0][0], HVPS["n"])

    def trace(n):
        return lambda: (np.asarray(build().trace(maxIter=n, tol=-1.0)), HVPS["n"])

    def density():
        return build().density(iter=density_iter, n_v=1), HVPS["n"]

    return top, trace, density, build


def eigenthings_runs(model, crit, x, y):
    import hessian_eigenthings as he

    op = count_eigenthings_hvps(he.HessianOperator(model, [(x, y)], he.supervised_loss(crit)))
    seeds = iter(range(10_000))

    def top(max_iter=None):
        def run():
            EHVPS["n"] = 0
            res = he.lanczos(op, k=1, max_iter=max_iter, seed=next(seeds))
            return float(res.eigenvalues[0]), EHVPS["n"]

        return run

    def trace(n, method):
        def run():
            EHVPS["n"] = 0
            res = he.trace(op, num_matvecs=n, method=method, seed=next(seeds))
            return (res.estimate, res.stderr), EHVPS["n"]

        return run

    return top, trace, op


def hvp_runs(prob, ph_build, e_op):
    """One Hessian-vector product in each library (``(None, 1)`` runs)."""
    import sys as _sys

    import torch

    op = so.curvature.curvature_operator(prob, prob.theta0)
    mv = eqx.filter_jit(lambda op, v: op.mv(v))  # the operator an argument, as in the estimators' steps
    v = jr.normal(jr.key(7), (prob.dim,), jnp.float32)

    def so_hvp():
        jax.block_until_ready(mv(op, v))
        return None, 1

    ph = ph_build()
    ph_hvp_fn = _sys.modules["pyhessian.hessian"].hessian_vector_product
    vt = [torch.randn_like(p) for p in ph.params]

    def ph_hvp():
        ph_hvp_fn(ph.gradsH, ph.params, vt)
        return None, 1

    ve = torch.randn(e_op.size)

    def e_hvp():
        e_op.matvec(ve)
        return None, 1

    return {"sde_opt": so_hvp, "PyHessian": ph_hvp, "hessian-eigenthings": e_hvp}


def reference(prob, tol: float):
    """float64 λmax by Lanczos to ``tol``."""
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), prob.unravel(prob.theta0))
    p64 = p64 if "params" in p64 else {"params": p64}  # the Flax variables the loss takes
    prob64 = so.Problem(prob.loss_fn, prob.data, params=p64)
    op = so.curvature.curvature_operator(prob64, prob64.theta0)
    res = so.curvature.eigs(op, 2, key=jr.key(0), tol=tol, max_iter=300)
    return float(res.values[0]), float(res.values[1]), int(res.n_iter)


def hvp_parts(args):
    """Where one sde_opt product's time goes: a gradient, one ``op.mv`` (linearise + product,
    what each host-loop step runs), the product alone with ``jax.linearize``'s residuals passed
    in, and 8 of each ``vmap``ped (what Hutchinson and Hutch++ run per host step)."""
    _, prob, _ = make_problem(args.n_examples, 0, args.batch_size, args.lr)
    theta = prob.theta0
    op = so.curvature.curvature_operator(prob, theta)
    v = jr.normal(jr.key(1), (prob.dim,), jnp.float32)
    vs = jr.normal(jr.key(2), (8, prob.dim), jnp.float32)
    f_jvp = jax.jit(lambda t: jax.linearize(jax.grad(prob.loss), t)[1])(theta)  # a Partial holding the residuals
    rows = {
        "gradient": (eqx.filter_jit(lambda p, t: jax.grad(p.loss)(t)), (prob, theta), 1),
        "op.mv (linearise + product)": (eqx.filter_jit(lambda op, v: op.mv(v)), (op, v), 1),
        "product alone (residuals passed in)": (eqx.filter_jit(lambda f, v: f(v)), (f_jvp, v), 1),
        "8 x op.linear(), vmapped": (eqx.filter_jit(lambda op, vs: jax.vmap(op.linear())(vs)), (op, vs), 8),
        "8 products alone, vmapped": (eqx.filter_jit(lambda f, vs: jax.vmap(f)(vs)), (f_jvp, vs), 8),
    }
    mb = sum(x.nbytes for x in jax.tree_util.tree_leaves(f_jvp)) / 1e6
    print(f"CNN d = {prob.dim:,}, N = {args.n_examples}; residuals of the linearisation: {mb:.0f} MB")
    for name, (f, a, n) in rows.items():
        jax.block_until_ready(f(*a))  # compile
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*a))
            ts.append(time.perf_counter() - t0)
        print(f"{name:>36}: {med(ts):7.3f} s, {med(ts) / n:7.3f} s per product  ({', '.join(f'{t:.3f}' for t in ts)})",
              flush=True)


# ------------------------------------------------------------------------------- report
TOP = ("top eigenvalue", "PyHessian default (tol=1e-3)", "PyHessian tol=1e-6",
       "eigenthings Lanczos default (2 steps)", "eigenthings Lanczos 20 steps")


def _ms(ts):
    return f"{med(ts):.2f} s ({min(ts):.2f}–{max(ts):.2f})"


def report(st: dict, args, done: bool) -> str:
    import torch

    r = st["runs"]
    n_rounds = len(next(iter(r.values()))) if r else 0
    lines = [
        "# Curvature on a CNN: sde_opt against PyHessian and hessian-eigenthings",
        "",
        f"`python benchmarks/bench_networks.py --n-examples {args.n_examples} --repeats {args.repeats} "
        f"--threads {args.threads} --probes {args.probes} --density-iter {args.density_iter} "
        f"--train-steps {args.train_steps}`{' --fast' if args.fast else ''}, "
        f"{datetime.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs; "
        f"{torch.get_num_threads()} torch threads, XLA with {args.threads}; JAX {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}, PyHessian 0.1, hessian-eigenthings "
        f"{st['he_version']}; float32 in all three."
        + ("" if done else f" **Partial: {n_rounds} of {args.repeats} rounds done.**"),
        "",
        f"Flax CNN, d = {st['d']:,} parameters, N = {args.n_examples} synthetic 16×16×3 images, 10 random "
        f"labels, after {args.train_steps} SGD steps (batch {args.batch_size}, lr {args.lr}): loss "
        f"{st['log']['loss0']:.4f} → {st['log']['loss1']:.4f} ({st['log']['train_s']:.0f} s). Copied into torch: "
        f"losses {st['losses'][0]:.6f} (JAX) and {st['losses'][1]:.6f} (torch), relative difference "
        f"{abs(st['losses'][0] - st['losses'][1]) / abs(st['losses'][0]):.1e}. "
        f"Load average (1 min) {st['load0']:.2f} at the start"
        + (f", {st['load1']:.2f} at the end" if "load1" in st else "") + ".",
        "",
        "## One Hessian-vector product (the unit of cost)",
        "",
        "| library | one HVP | what it does |",
        "|---|---:|---|",
    ]
    what = {"sde_opt": "compiled `op.mv` (linearise + product in one call)",
            "PyHessian": "`hessian_vector_product` on the retained `create_graph` graph",
            "hessian-eigenthings": "`HessianOperator.matvec`: forward, backward with `create_graph`, second backward"}
    hvp = {k: med([t for t, _, _ in v]) for k, v in st["hvp"].items()}
    for k, v in st["hvp"].items():
        ts = [t for t, _, _ in v]
        lines.append(f"| {k} | {med(ts) * 1e3:.0f} ms ({min(ts) * 1e3:.0f}–{max(ts) * 1e3:.0f}) | {what[k]} |")
    lines += [
        "",
        "## Times",
        "",
        "Medians over the rounds (range in brackets); HVPs are medians of the products each run made; "
        "'cost/HVP' is the time over HVPs × that library's one-HVP time (1.0: nothing but products). "
        "Speed-up: the competitor's time over sde_opt's in the same task.",
        "",
        "| task | library and setting | time | HVPs | cost/HVP | speed-up of sde_opt |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lib_of = lambda name: ("sde_opt" if name.startswith("sde_opt") else  # noqa: E731
                           "PyHessian" if name.startswith("PyHessian") else "hessian-eigenthings")
    for task, rows in st["tasks"].items():
        so_name = next(n for n in rows if n.startswith("sde_opt"))
        t_so = med([t for t, _, _ in r[so_name]]) if r.get(so_name) else None
        for name in rows:
            if not r.get(name):
                continue
            ts, hs = [t for t, _, _ in r[name]], [h for _, _, h in r[name]]
            cost = med(ts) / (med(hs) * hvp[lib_of(name)]) if hvp else float("nan")
            sp = "" if name == so_name or t_so is None else f"**{med(ts) / t_so:.1f}×**"
            lines.append(f"| {task} | {name} | {_ms(ts)} | {med(hs):.0f} | {cost:.2f} | {sp} |")
    lam = st.get("lam_ref")
    lines += ["", "## Accuracy", ""]
    if lam is not None:
        lines += [
            f"Top eigenvalue: reference λ₁ = {lam:.6f} (float64 Lanczos, tol 1e-10, {st['ref_iter']} steps; "
            f"λ₂ = {st['lam2_ref']:.6f}, so λ₁/λ₂ = {lam / st['lam2_ref']:.2f}). Relative errors, median over the "
            "rounds (worst in brackets):",
            "",
            "| library and setting | λ₁ (first round) | relative error |",
            "|---|---:|---:|",
        ]
        for name in st["tasks"]["top eigenvalue"]:
            if r.get(name):
                errs = [abs(v - lam) / abs(lam) for _, v, _ in r[name]]
                lines.append(f"| {name} | {r[name][0][1]:.6f} | {med(errs):.1e} ({max(errs):.1e}) |")
        lines.append("")
    lines += [
        "Trace: no exact reference (that would take d products); each estimate is the first round's ± its "
        "standard error, then [the median standard error over the rounds]. PyHessian's standard error is its "
        f"samples' standard deviation over √probes. Pilot: σ₁ = {st['sigma1']:.3f} (spread of one Rademacher "
        f"zᵀHz, {st['pilot_n']} probes), SE₊₊ = {st['se_plus']:.4f} (sde_opt Hutch++, n = {args.probes}), so "
        f"m = ⌈(σ₁/SE₊₊)²⌉ = {st['m_equal_raw']}" + (f", capped at {st['m_equal']} (`--max-probes`)"
                                                     if st['m_equal'] != st['m_equal_raw'] else "") + ".",
        "",
        "| library and setting | trace ± s.e. | [median s.e.] |",
        "|---|---:|---:|",
    ]
    for name in st["tasks"]["trace"]:
        if not r.get(name):
            continue
        if name.startswith("PyHessian"):
            vals = [(float(np.mean(s)), float(np.std(s, ddof=1) / np.sqrt(len(s)))) for _, s, _ in r[name]]
        else:
            vals = [v for _, v, _ in r[name]]
        lines.append(f"| {name} | {vals[0][0]:.3f} ± {vals[0][1]:.3f} | [{med([se for _, se in vals]):.3f}] |")
    c = st["compile_s"]
    lines += [
        "",
        "sde_opt's first calls (compile and their products; excluded above): " + ", ".join(f"{k} {v:.1f} s" for k, v in c.items())
        + f". Loop driver chosen by `loop='auto'`: `{st['loop']}`.",
        "",
        "Peak resident memory of the process (`ru_maxrss`, all three libraries and the data in one process): "
        + ", ".join(f"{k} {v:,.0f} MB" for k, v in st["rss"].items()) + ".",
        "",
        "PyHessian's `density()` calls `torch.eig`, removed in torch 2; it ran with a stand-in built on "
        "`torch.linalg.eigh` (installed by `bench_curvature.py`).",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-examples", type=int, default=2048)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--probes", type=int, default=30, help="products of sde_opt's and eigenthings' Hutch++")
    parser.add_argument("--max-probes", type=int, default=300, help="cap on the equal-s.e. Hutchinson probes m")
    parser.add_argument("--density-iter", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads for both (torch and XLA's CPU flags)")
    parser.add_argument("--fast", action="store_true", help="tiny sizes, one round (smoke test)")
    parser.add_argument("--markdown", default=None, help="also write the report to this file (after every round)")
    parser.add_argument("--hvp-parts", action="store_true",
                        help="only time the parts of one sde_opt product (gradient, linearisation, product, 8 vmapped)")
    args = parser.parse_args(argv)
    if args.hvp_parts:
        if args.fast:
            args.n_examples, args.repeats = 32, 1
        return hvp_parts(args)
    if args.fast:
        args.n_examples, args.train_steps, args.probes, args.max_probes = 32, 3, 6, 12
        args.density_iter, args.repeats = 8, 1
    import hessian_eigenthings as he
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning)  # torch's only_inputs deprecation, Lanczos warnings
    install_torch_eig_shim()
    count_pyhessian_hvps()
    st = {"load0": os.getloadavg()[0], "he_version": he.__version__, "rss": {}}

    net, prob, st["log"] = make_problem(args.n_examples, args.train_steps, args.batch_size, args.lr)
    st["d"] = int(prob.dim)
    model, crit, x, y = to_torch(prob)
    with torch.no_grad():
        st["losses"] = (float(prob.loss(prob.theta0)), float(crit(model(x), y)))
    rel = abs(st["losses"][0] - st["losses"][1]) / abs(st["losses"][0])
    if rel > 1e-4:
        raise SystemExit(f"the torch copy disagrees: losses {st['losses']} (relative {rel:.1e})")
    print(f"d = {st['d']:,}, N = {args.n_examples}, losses {st['losses']}, train {st['log']}", flush=True)
    st["loop"] = so.curvature.resolve_loop("auto", so.curvature.curvature_operator(prob, prob.theta0))
    st["rss"]["after the model"] = _maxrss_mb()

    ph_top, ph_trace, ph_density, ph_build = pyhessian_runs(model, crit, x, y, args.density_iter)
    e_top, e_trace, e_op = eigenthings_runs(model, crit, x, y)
    so_top, so_trace, so_density = sde_opt_runs(prob, args.density_iter)
    keys = iter(jr.split(jr.key(42), 10_000))
    plus = so.curvature.HutchPlusPlus()
    st["compile_s"] = {}
    for name, fn in (("eigenvalue", so_top(next(keys))), ("Hutch++", so_trace(next(keys), args.probes, plus)),
                     ("Hutchinson", so_trace(next(keys), 8)), ("density", so_density(next(keys)))):
        st["compile_s"][name] = timed(fn)[0]
        print(f"compile {name}: {st['compile_s'][name]:.1f} s", flush=True)
    hvps = hvp_runs(prob, ph_build, e_op)
    for f in hvps.values():
        f()  # compile / warm
    st["hvp"] = {k: [timed(f) for _ in range(3)] for k, f in hvps.items()}
    print({k: med([t for t, _, _ in v]) for k, v in st["hvp"].items()}, flush=True)

    # equal standard error: PyHessian's Hutchinson probes for Hutch++'s standard error
    st["pilot_n"] = 2 * args.probes
    st["sigma1"] = float(np.std(np.asarray(so.hessian_trace(prob, prob.theta0, key=next(keys),
                                                            n_probes=st["pilot_n"]).samples), ddof=1))
    st["se_plus"] = med([so_trace(next(keys), args.probes, plus)()[0][1] for _ in range(2)])
    st["m_equal_raw"] = max(2, int(np.ceil((st["sigma1"] / st["se_plus"]) ** 2)))
    m = st["m_equal"] = min(st["m_equal_raw"], args.max_probes)
    print(f"sigma1 {st['sigma1']:.3f}, se++ {st['se_plus']:.4f}, m = {st['m_equal_raw']} -> {m}", flush=True)
    if m < 8:  # on CPU products go 8 at a time, a last short batch padded: only m < 8 is a new shape to compile
        st["compile_s"][f"Hutchinson m={m}"] = timed(so_trace(next(keys), m))[0]

    n = args.probes
    st["tasks"] = {
        "top eigenvalue": {
            "sde_opt hessian_eigs(k=1), default tol": lambda: so_top(next(keys)),
            "PyHessian eigenvalues(top_n=1), default tol=1e-3": lambda: ph_top(),
            "PyHessian eigenvalues(top_n=1), tol=1e-6": lambda: ph_top(maxIter=300, tol=1e-6),
            "eigenthings lanczos(k=1), default (2 steps)": lambda: e_top(),
            "eigenthings lanczos(k=1), 20 steps": lambda: e_top(20),
        },
        "trace": {
            f"sde_opt Hutch++, n={n}": lambda: so_trace(next(keys), n, plus),
            f"sde_opt Hutchinson, m={m}": lambda: so_trace(next(keys), m),
            f"PyHessian Hutchinson, m={m} (equal s.e.)": lambda: ph_trace(m),
            f"eigenthings Hutch++, n={n}": lambda: e_trace(n, "hutch++"),
            f"eigenthings Hutchinson, m={m}": lambda: e_trace(m, "hutchinson"),
        },
        "density (SLQ, 1 probe)": {
            f"sde_opt hessian_density(n_iter={args.density_iter})": lambda: so_density(next(keys)),
            f"PyHessian density(iter={args.density_iter})": lambda: ph_density,
        },
    }
    st["runs"] = {name: [] for rows in st["tasks"].values() for name in rows}
    st["rss"]["after compiling"] = _maxrss_mb()
    lam, lam2, n_ref = reference(prob, 1e-10)
    st["lam_ref"], st["lam2_ref"], st["ref_iter"] = lam, lam2, n_ref
    print(f"reference lambda1 {lam:.6f}, lambda2 {lam2:.6f} ({n_ref} float64 steps)", flush=True)
    st["rss"]["after the float64 reference"] = _maxrss_mb()

    def write(done):
        text = report(st, args, done)
        if args.markdown:
            pathlib.Path(args.markdown).write_text(text)
        return text

    for rnd in range(args.repeats):  # every task once per round, the libraries interleaved
        for rows in st["tasks"].values():
            for name, make in rows.items():
                st["runs"][name].append(timed(make()))
                t, v, h = st["runs"][name][-1]
                print(f"round {rnd}: {name}: {t:.2f} s, {h} HVPs, {v if np.ndim(v) == 0 or len(np.ravel(v)) < 3 else ''}",
                      flush=True)
        st["rss"]["peak"] = _maxrss_mb()
        write(False)
    st["load1"] = os.getloadavg()[0]
    st["rss"]["peak"] = _maxrss_mb()
    print(write(True))


if __name__ == "__main__":
    main()
