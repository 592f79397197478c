"""Curvature of networks: sde_opt against PyHessian and hessian-eigenthings 1.0 (torch, CPU), one process.

The models are ``bench_models.py``'s: the CNN (151,287 parameters) and a ResNet with
BatchNorm (1,174,682 parameters), on ``--n-examples`` images of scikit-learn's digits
upsampled to 16×16×3 with their real labels (``--data digits``, the default) or on
synthetic images with random labels (``--data synthetic``), trained for ``--train-steps``
mini-batch SGD steps in JAX, then copied with the same weights (and BatchNorm statistics)
into the torch twin; the two losses are checked to agree before anything is timed.
Everything is float32 on the CPU with the same threads in both (``--threads``, default 2).
sde_opt's problem is built as a user would, ``so.Problem(loss, data, params=variables)``
(``chunk_size=None``: on CPU a convolutional model then streams in chunks of ~128 images,
see ``so.Problem``).

Tasks, libraries interleaved, ``--repeats`` rounds:

1. **One product**, the unit of cost: sde_opt's compiled ``op.mv`` (and the same with
   ``chunk_size=N``, one chunk), PyHessian's ``hessian_vector_product`` on its retained
   graph, hessian-eigenthings' ``HessianOperator.matvec`` (double backward per product).
2. **Top eigenvalue at equal accuracy.** ``--histories`` runs of each method from random
   starts record the estimate after every product: sde_opt's Lanczos
   (``EigResult.history()``: the Ritz value after j steps) and PyHessian's power iteration
   (``eigenvalues(tol=-1)``: its Rayleigh quotient after each product, recorded by a wrapper
   around its HVP). For each target relative error ε (``--targets``, against a float64
   Lanczos reference) each method's product count is the first after which its error stays
   ≤ ε in every recorded run; then each runs with exactly that count from a new start and is
   timed: ``so.curvature.eigs(fixed_steps=True, max_iter=j)``, PyHessian
   ``eigenvalues(maxIter=p, tol=-1)``, and hessian-eigenthings' ``lanczos(max_iter=j)``
   (the same algorithm as ours, so the same count); the errors they reach are reported.
3. **Top eigenvalue with defaults**: ``so.hessian_eigs(k=1)`` (and with ``min_iter=1``);
   PyHessian at ``tol=1e-3`` (default) and ``1e-6``; hessian-eigenthings ``lanczos(k=1)``
   at its default (2 steps) and 20 steps.
4. **Trace at equal standard error**: sde_opt's Hutch++ with ``n`` products
   (``--hutch-n``) against PyHessian's Hutchinson (its only estimator) with as many
   Rademacher probes ``m = ⌈(σ₁/SE₊₊)²⌉`` as it needs for the same standard error (σ₁:
   one probe's spread, pooled over a pilot of ``--pilot`` Hutchinson probes and PyHessian's
   own samples; SE₊₊: sde_opt's Hutch++ standard error pooled over its runs). PyHessian runs
   ``min(m, --max-probes)`` probes and its time is scaled to ``m`` (its cost is linear in
   the probes; marked). hessian-eigenthings' ``trace(method="hutch++", num_matvecs=n)``
   beside.
5. **Density**: stochastic Lanczos quadrature, one probe, ``--density-iter`` steps in both.

The report (``--markdown``) is rewritten after every round. Absolute times on a shared
machine are noise; the load average and the peak resident memory are in the report.

    pip install -e ".[bench,nets]"
    python benchmarks/bench_networks.py --model cnn --n-examples 2048 --repeats 1 --hutch-n 15 30 60 --max-probes 60 \
        --markdown benchmarks/RESULTS_networks_cnn.md
    python benchmarks/bench_networks.py --model resnet --n-examples 2048 --repeats 1 --hutch-n 15 30 --max-probes 40 \
        --pilot 16 --markdown benchmarks/RESULTS_networks_resnet.md
    python benchmarks/bench_networks.py --fast     # tiny sizes, one round: a smoke test (compiles dominate)
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import platform
import resource
import sys
import warnings

if "--threads" not in " ".join(sys.argv[1:]):  # bench_curvature reads --threads from argv before importing jax
    sys.argv.append("--threads=2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_curvature import HVPS, count_pyhessian_hvps, install_torch_eig_shim, med, timed  # noqa: E402
from bench_curvature import sde_opt_runs as bc_sde_opt_runs  # noqa: E402
import bench_models as bm  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import sde_opt as so  # noqa: E402

EHVPS = {"n": 0}  # hessian-eigenthings' products (counted by a wrapper)
PH_TRACE: list = []  # PyHessian's Rayleigh quotients, one per product, while recording


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------- the set-up
def make_setup(args):
    """The trained Flax model as an sde_opt problem, and its torch twin with the same weights."""
    import torch

    if args.data == "digits":
        x, y = bm.digits_images(args.n_examples, 16, 3, seed=0)
    else:  # synthetic images, random labels
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.n_examples, 16, 16, 3), dtype=np.float32)
        y = rng.integers(0, 10, args.n_examples)
    module, variables = bm.make_flax(args.model, jr.key(0), (16, 16, 3))
    variables, log = bm.train_flax(args.model, module, variables, x, y, args.train_steps,
                                   min(args.batch_size, args.n_examples), args.lr, seed=0)
    loss = bm.per_example_loss(args.model, module)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    prob = so.Problem(loss, data, params=variables)
    model = bm.to_torch(args.model, variables)
    xt, yt, crit = bm.images_to_torch(x), torch.from_numpy(np.asarray(y, np.int64)), bm.torch_criterion()
    with torch.no_grad():
        losses = (float(prob.loss(prob.theta0)), float(crit(model(xt), yt)))
    rel = abs(losses[0] - losses[1]) / abs(losses[0])
    if rel > 1e-4:
        raise SystemExit(f"the torch copy disagrees: losses {losses} (relative {rel:.1e})")
    return {"prob": prob, "loss": loss, "variables": variables, "data": data, "model": model, "x": xt, "y": yt,
            "crit": crit, "log": log, "losses": losses}


def reference(setup, tol: float = 1e-10):
    """λ₁, λ₂ in float64 (weights, statistics and images) by Lanczos to ``tol``."""
    cast = lambda t: jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)  # noqa: E731
    prob64 = so.Problem(setup["loss"], cast(setup["data"]), params=cast(setup["variables"]))
    res = so.curvature.eigs(so.curvature.curvature_operator(prob64, prob64.theta0), 2, key=jr.key(0), tol=tol,
                            max_iter=300)
    return float(res.values[0]), float(res.values[1]), int(res.n_iter)


# ------------------------------------------------------------------------------- the runs
def _install_pyhessian_recorder():
    """Wrap PyHessian's HVP (already wrapped to count) to also record ``vᵀHv`` of each product:
    in its power iteration that is the eigenvalue estimate of that iteration."""
    ph_module = sys.modules["pyhessian.hessian"]
    inner = ph_module.hessian_vector_product

    def recorded(gradsH, params, v):
        hv = inner(gradsH, params, v)
        PH_TRACE.append(float(sum((h * w).sum() for h, w in zip(hv, v))))
        return hv

    ph_module.hessian_vector_product = recorded


def pyhessian_runs(setup, density_iter: int):
    from pyhessian import hessian

    model, crit, x, y = setup["model"], setup["crit"], setup["x"], setup["y"]

    def build():
        model.zero_grad(set_to_none=True)  # PyHessian accumulates into .grad otherwise
        HVPS["n"] = 0
        return hessian(model, crit, data=(x, y), cuda=False)

    def top(**kw):
        return lambda: (build().eigenvalues(top_n=1, **kw)[0][0], HVPS["n"])

    def history(n):
        PH_TRACE.clear()
        build().eigenvalues(top_n=1, maxIter=n, tol=-1.0)
        return np.asarray(PH_TRACE)

    def trace(m):
        def run():
            samples = np.asarray(build().trace(maxIter=m, tol=-1.0))
            return (float(np.mean(samples)), float(np.std(samples, ddof=1))), HVPS["n"]

        return run

    def density():
        return lambda: (build().density(iter=density_iter, n_v=1), HVPS["n"])

    return {"top": top, "history": history, "trace": trace, "density": density, "build": build}


def eigenthings_runs(setup):
    import hessian_eigenthings as he

    op = he.HessianOperator(setup["model"], [(setup["x"], setup["y"])], he.supervised_loss(setup["crit"]))
    inner = op.matvec

    def counted(v):
        EHVPS["n"] += 1
        return inner(v)

    op.matvec = counted
    seeds = iter(range(10_000))

    def top(max_iter=None):
        def run():
            EHVPS["n"] = 0
            res = he.lanczos(op, k=1, max_iter=max_iter, seed=next(seeds))
            return float(res.eigenvalues[0]), EHVPS["n"]

        return run

    def trace(n):
        def run():
            EHVPS["n"] = 0
            res = he.trace(op, num_matvecs=n, method="hutch++", seed=next(seeds))
            return (float(res.estimate), float(res.stderr)), EHVPS["n"]

        return run

    return {"top": top, "trace": trace, "op": op}


def sde_opt_runs(prob, density_iter: int):
    """``bench_curvature``'s runs (defaults top eigenvalue, trace, density) and the fixed-step
    Lanczos runs and histories of the equal-accuracy task."""
    top, trace, density = bc_sde_opt_runs(prob, density_iter)
    op = so.curvature.curvature_operator(prob, prob.theta0)

    def top_fixed(key, j):
        def run():
            res = so.curvature.eigs(op, 1, key=key, max_iter=j, fixed_steps=True)
            return float(res.values[0]), int(res.n_iter)

        return run

    def history(key, j):
        return so.curvature.eigs(op, 1, key=key, max_iter=j, fixed_steps=True).history()[:, 0]

    return {"top_fixed": top_fixed, "history": history, "top": top, "trace": trace, "density": density}


def product_runs(setup, ph, eo):
    """One Hessian-vector product in each library (``(None, 1)`` runs)."""
    import torch

    prob = setup["prob"]
    one = so.Problem(setup["loss"], setup["data"], params=setup["variables"], chunk_size=prob.n_examples)
    mv = eqx.filter_jit(lambda op, v: op.mv(v))  # the operator an argument, as in the estimators' steps
    v = jr.normal(jr.key(7), (prob.dim,), jnp.float32)
    ops = {p: so.curvature.curvature_operator(p, p.theta0) for p in (prob, one)}

    def so_hvp(p):
        def run():
            jax.block_until_ready(mv(ops[p], v))
            return None, 1

        return run

    hess = ph["build"]()
    ph_hvp_fn = sys.modules["pyhessian.hessian"].hessian_vector_product
    vt = [torch.randn_like(p) for p in hess.params]

    def ph_hvp():
        ph_hvp_fn(hess.gradsH, hess.params, vt)
        return None, 1

    ve = torch.randn(eo["op"].size)

    def e_hvp():
        eo["op"].matvec(ve)
        return None, 1

    return {f"sde_opt (chunks of {prob.chunk_size or prob.n_examples})": so_hvp(prob),
            f"sde_opt (one chunk of {prob.n_examples})": so_hvp(one),
            "PyHessian (retained graph)": ph_hvp, "hessian-eigenthings (double backward)": e_hvp}


def steps_to(errors, eps: float) -> int | None:
    """The first product count after which the error stays at most ``eps`` (1-based)."""
    bad = np.nonzero(~(np.asarray(errors) <= eps))[0]
    j = 1 if bad.size == 0 else int(bad[-1]) + 2
    return j if j <= len(errors) else None


# ------------------------------------------------------------------------------- report
def report(st: dict, args, done: bool) -> str:
    import torch

    r = st["runs"]
    n_rounds = max((len(v) for v in r.values()), default=0)
    lam = st.get("lam_ref")
    unit = {lib: med([t for t, _, _ in ts]) for lib, ts in st["hvp"].items()}
    so_unit = unit[next(iter(unit))]
    lines = [
        f"# Curvature of the {args.model.upper()}: sde_opt against PyHessian and hessian-eigenthings", "",
        f"`python benchmarks/bench_networks.py {' '.join(st['argv'])}`, {st['date']}; {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; {args.threads} torch threads, XLA with {args.threads}; JAX {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}, PyHessian 0.1, hessian-eigenthings {st['he_version']}; "
        f"float32 in all three. " + ("" if done else f"**Partial: {n_rounds} of {args.repeats} rounds done.**"), "",
        f"{args.model}, d = {st['d']:,} parameters, N = {args.n_examples} "
        f"{'digits upsampled to 16×16×3, real labels' if args.data == 'digits' else 'synthetic 16×16×3 images, random labels'}, "
        f"after {args.train_steps} SGD steps (batch {args.batch_size}, lr {args.lr}, momentum 0.9): loss "
        f"{st['log']['loss0']:.4f} → {st['log']['loss']:.4f}, train accuracy {st['log']['accuracy']:.3f}. "
        f"Copied into torch: losses {st['losses'][0]:.6f} (JAX) and {st['losses'][1]:.6f} (torch). "
        f"sde_opt streams in chunks of {st['chunk']} (chunk_size=None). Load average (1 min) {st['load0']:.2f} at the "
        f"start" + (f", {st['load1']:.2f} at the end." if "load1" in st else "."), "",
        (f"Reference (float64 Lanczos, tol 1e-10, {st['ref_iter']} steps): λ₁ = {lam:.6f}, λ₂ = {st['lam2_ref']:.6f} "
         f"(λ₂/λ₁ = {st['lam2_ref'] / lam:.3f})." if lam is not None else "No eigenvalue reference (not asked)."), "",
        "## One Hessian-vector product (the unit of cost)", "",
        "| library | one product | × sde_opt |", "|---|---:|---:|",
    ]
    for lib, ts in st["hvp"].items():
        tt = [t for t, _, _ in ts]
        lines.append(f"| {lib} | {med(tt) * 1e3:.0f} ms ({min(tt) * 1e3:.0f}–{max(tt) * 1e3:.0f}) | "
                     f"{med(tt) / so_unit:.2f} |")

    def row_time(name):
        ts = r.get(name, [])
        return med([t for t, _, _ in ts]) if ts else float("nan")

    def row_hvps(name):
        ts = r.get(name, [])
        return int(med([h for _, _, h in ts])) if ts else 0

    def row_err(name):
        ts = r.get(name, [])
        return med([abs(float(v) - lam) / lam for _, v, _ in ts]) if ts else float("nan")

    def table(title, rows, note="", errors=True, bases=1):
        """Rows of (name, library); the first ``bases`` rows are sde_opt's, and every other row
        gets its time over each of theirs (the speed-up of that sde_opt setting)."""
        base_rows = rows[:bases]
        out = ["", f"## {title}", ""] + ([note, ""] if note else [])
        out += ["| library and setting | time | products | cost / product | "
                + ("relative error | " if errors else "")
                + " | ".join(f"speed-up of {name}" for name, _ in base_rows) + " |",
                "|---|---:|---:|---:|" + ("---:|" if errors else "") + "---:|" * bases]
        for name, lib in rows:
            t, h = row_time(name), row_hvps(name)
            out.append(f"| {name} | {t:.2f} s | {h} | {t / max(h, 1) / unit[lib]:.2f} | "
                       + (f"{row_err(name):.1e} | " if errors else "")
                       + " | ".join("" if (name, lib) in base_rows else f"**{t / row_time(b):.1f}×**"
                                    for b, _ in base_rows) + " |")
        return out

    lines += accuracy_section(st, args, r, row_time, row_err, lam) if "accuracy" in args.tasks else []
    so_lib, ph_lib, e_lib = list(unit)[0], "PyHessian (retained graph)", "hessian-eigenthings (double backward)"
    if "defaults" in args.tasks:
        lines += table("Top eigenvalue with each library's defaults", [
            ("sde_opt hessian_eigs(k=1), defaults", so_lib),
            ("sde_opt hessian_eigs(k=1, min_iter=1)", so_lib),
            ("PyHessian eigenvalues(top_n=1), default tol=1e-3", ph_lib),
            ("PyHessian eigenvalues(top_n=1), tol=1e-6", ph_lib),
            ("eigenthings lanczos(k=1), default (2 steps)", e_lib),
            ("eigenthings lanczos(k=1), 20 steps", e_lib)],
            "cost / product: the time over the products times that library's one-product time (1.0: nothing but "
            "products). Speed-up: that row's time over the sde_opt setting's.", bases=2)
    lines += trace_section(st, args, r, row_time) if "trace" in args.tasks else []
    if "density" in args.tasks:
        lines += table("Density (stochastic Lanczos quadrature, one probe)", [
            (f"sde_opt hessian_density(n_iter={args.density_iter})", so_lib),
            (f"PyHessian density(iter={args.density_iter})", ph_lib)], errors=False)
    lines += ["", f"sde_opt's first calls (compile and products; excluded above): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in st["compile_s"].items()) + ".",
              f"Loop driver chosen by `loop='auto'`: `{st['loop']}`.", "",
              "Peak resident memory of the process (`ru_maxrss`, all three libraries and the data in one process): "
              + ", ".join(f"{k} {v:,.0f} MB" for k, v in st["rss"].items()) + ".", "",
              "PyHessian's `density()` calls `torch.eig`, removed in torch 2; it ran with a stand-in built on "
              "`torch.linalg.eigh` (installed by `bench_curvature.py`)."]
    return "\n".join(lines) + "\n"


def accuracy_section(st, args, r, row_time, row_err, lam):
    lines = []
    n_h = len(st["so_hist"])
    lines += ["", "## Top eigenvalue at equal accuracy", "",
              f"Products each method needs before its relative error stays ≤ ε in all of {n_h} recorded runs from "
              f"random starts (sde_opt's Lanczos histories over {len(st['so_hist'][0])} steps, PyHessian's power "
              f"iteration over {len(st['ph_hist'][0])} products); then each runs with exactly that many products from "
              "a new random start, timed, and its error is reported (medians over the rounds). "
              "hessian-eigenthings' Lanczos is the same algorithm as sde_opt's: it runs sde_opt's count.", "",
              "| ε | sde_opt Lanczos | PyHessian power iteration | eigenthings Lanczos | speed-up vs PyHessian | "
              "speed-up vs eigenthings |", "|---|---|---|---|---:|---:|"]
    for eps in args.targets:
        js, jp = st["steps"][eps]
        cells = []
        for name, j in ((f"sde_opt eps={eps}", js), (f"PyHessian eps={eps}", jp), (f"eigenthings eps={eps}", js)):
            if j is None:
                cells.append("not reached")
            else:
                cells.append(f"{row_time(name):.2f} s, {j} products, error {row_err(name):.1e}")
        t_so, t_ph, t_e = (row_time(f"{lib} eps={eps}") for lib in ("sde_opt", "PyHessian", "eigenthings"))
        sp = f"**{t_ph / t_so:.1f}×**" if jp is not None and js is not None else "—"
        se = f"**{t_e / t_so:.1f}×**" if js is not None else "—"
        lines.append(f"| {eps:g} | {cells[0]} | {cells[1]} | {cells[2]} | {sp} | {se} |")
    lines += ["", f"Largest relative error over the {n_h} recorded runs after j products:", "",
              "| products | " + " | ".join(str(j) for j in st["show_steps"]) + " |",
              "|---|" + "---:|" * len(st["show_steps"])]
    for lib, hists in (("sde_opt Lanczos", st["so_hist"]), ("PyHessian power iteration", st["ph_hist"])):
        err = np.max([np.abs(h - lam) / lam for h in hists], axis=0)
        lines.append(f"| {lib} | " + " | ".join(f"{err[j - 1]:.1e}" if j <= len(err) else "" for j in st["show_steps"])
                     + " |")
    return lines


def trace_section(st, args, r, row_time):
    lines = []
    # σ₁ pooled from every Hutchinson sample (the pilot and PyHessian's runs); SE₊₊ pooled over every Hutch++ run
    var1, cnt1 = st["sigma1"] ** 2 * (args.pilot - 1), args.pilot - 1
    for n in args.hutch_n:
        for _, v, _ in r.get(f"PyHessian Hutchinson n={n}", []):
            var1, cnt1 = var1 + v[1] ** 2 * (st["ran"][n] - 1), cnt1 + st["ran"][n] - 1
    sigma1 = math.sqrt(var1 / cnt1)
    lines += ["", "## Trace at equal standard error", "",
              f"σ₁ = {sigma1:.3f}: one Rademacher probe's spread, pooled over {cnt1 + 1} Hutchinson samples (the pilot "
              "of sde_opt's Hutchinson and PyHessian's runs). SE₊₊: the standard error of sde_opt's Hutch++ with n "
              "products, pooled over its runs (each run's own estimate rests on n/3 samples). "
              "m = ⌈(σ₁/SE₊₊)²⌉ PyHessian probes give the same standard error; PyHessian ran "
              f"min(m, {args.max_probes}) probes (m from the pilot) and its time is scaled to m (its cost is linear in "
              "the probes; marked * where scaled by more than 10%).", "",
              "| n | sde_opt Hutch++: time, estimate ± s.e. | SE₊₊ | m | PyHessian Hutchinson, m probes | "
              "eigenthings Hutch++, n | speed-up vs PyHessian | speed-up vs eigenthings Hutch++ |",
              "|---:|---|---:|---:|---|---|---:|---:|"]
    for n in args.hutch_n:
        a, b, c = f"sde_opt Hutch++ n={n}", f"PyHessian Hutchinson n={n}", f"eigenthings Hutch++ n={n}"
        ses = st["se_runs"][n] + [v[1] for _, v, _ in r.get(a, [])]
        se_plus = math.sqrt(np.mean(np.square(ses)))
        m, ran = max(2, math.ceil((sigma1 / se_plus) ** 2)), st["ran"][n]
        t_ph = row_time(b) * m / ran
        ests = [v for _, v, _ in r.get(a, [])]
        est = f"{ests[0][0]:.2f} ± {ests[0][1]:.2f}" if ests else ""
        e_ests = [v for _, v, _ in r.get(c, [])]
        e_est = f"{row_time(c):.2f} s, {e_ests[0][0]:.2f} ± {e_ests[0][1]:.2f}" if e_ests else ""
        ph_vals = [v for _, v, _ in r.get(b, [])]
        ph_est = f"{ph_vals[0][0]:.2f} ± {ph_vals[0][1] / math.sqrt(ran):.2f} ({ran} probes)" if ph_vals else ""
        lines.append(f"| {n} | {row_time(a):.2f} s, {est} | {se_plus:.3f} | {m} | {t_ph:.2f} s"
                     f"{'*' if abs(m / ran - 1) > 0.1 else ''}; {ph_est} | {e_est} | "
                     f"**{t_ph / row_time(a):.1f}×** | **{row_time(c) / row_time(a):.1f}×** |")
    return lines


# ------------------------------------------------------------------------------- main
TASKS = ("accuracy", "defaults", "trace", "density")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=bm.MODELS, default="cnn")
    parser.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--n-examples", type=int, default=2048)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None, help="SGD rate (default 0.02 for the CNN, 0.005 for the ResNet)")
    parser.add_argument("--targets", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-6])
    parser.add_argument("--history", type=int, default=60, help="products of the recorded PyHessian runs")
    parser.add_argument("--histories", type=int, default=3, help="recorded runs (random starts) of each method")
    parser.add_argument("--hutch-n", type=int, nargs="+", default=[15, 30])
    parser.add_argument("--pilot", type=int, default=32, help="Hutchinson probes of the σ₁ pilot")
    parser.add_argument("--max-probes", type=int, default=150, help="most probes PyHessian runs for the trace")
    parser.add_argument("--density-iter", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads for both (torch and XLA's CPU flags)")
    parser.add_argument("--fast", action="store_true", help="tiny sizes, one round (smoke test)")
    parser.add_argument("--markdown", default=None, help="also write the report to this file (after every round)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                        help="which sections to run (the product and the reference always run)")
    args = parser.parse_args(argv)
    args.lr = {"cnn": 0.02, "resnet": 0.005}[args.model] if args.lr is None else args.lr
    argv_shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--threads=2"]
    if args.fast:
        args.n_examples, args.train_steps, args.batch_size, args.hutch_n = 48, 3, 16, [6]
        args.targets, args.history, args.histories, args.pilot, args.max_probes = [1e-2], 12, 2, 8, 12
        args.density_iter, args.repeats = 6, 1
    import hessian_eigenthings as he
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning)  # torch's only_inputs deprecation, Lanczos warnings
    install_torch_eig_shim()
    count_pyhessian_hvps()
    _install_pyhessian_recorder()
    st = {"load0": os.getloadavg()[0], "he_version": he.__version__, "rss": {}, "argv": argv_shown,
          "date": datetime.date.today().isoformat(), "runs": {}, "compile_s": {}}

    setup = make_setup(args)
    prob = setup["prob"]
    st.update(d=int(prob.dim), log=setup["log"], losses=setup["losses"], chunk=prob.chunk_size or prob.n_examples)
    print(f"{args.model}: d = {st['d']:,}, N = {args.n_examples}, chunk {st['chunk']}, losses {st['losses']}, "
          f"train {st['log']}", flush=True)
    st["loop"] = so.curvature.resolve_loop("auto", so.curvature.curvature_operator(prob, prob.theta0))
    st["rss"]["after the model"] = _maxrss_mb()

    ph, eo, so_ = pyhessian_runs(setup, args.density_iter), eigenthings_runs(setup), sde_opt_runs(prob, args.density_iter)
    keys = iter(jr.split(jr.key(42), 10_000))

    # 1. one product
    hvps = product_runs(setup, ph, eo)
    for f in hvps.values():
        f()  # compile / warm
    st["hvp"] = {k: [timed(f) for _ in range(3)] for k, f in hvps.items()}
    print({k: round(med([t for t, _, _ in v]), 3) for k, v in st["hvp"].items()}, flush=True)

    if {"accuracy", "defaults"} & set(args.tasks):  # the float64 reference of the top eigenvalue
        st["lam_ref"], st["lam2_ref"], st["ref_iter"] = reference(setup)
        print(f"reference lambda1 {st['lam_ref']:.6f}, lambda2 {st['lam2_ref']:.6f} ({st['ref_iter']} float64 steps)",
              flush=True)
        st["rss"]["after the float64 reference"] = _maxrss_mb()
    lam = st.get("lam_ref")

    tasks = {}
    if "accuracy" in args.tasks:  # 2. convergence histories, the product counts at each target, the timed runs
        st["so_hist"] = [so_["history"](next(keys), min(args.history, 30)) for _ in range(args.histories)]
        st["ph_hist"] = [ph["history"](args.history) for _ in range(args.histories)]
        err_so, err_ph = (np.max([np.abs(h - lam) / lam for h in st[k]], axis=0) for k in ("so_hist", "ph_hist"))
        st["steps"] = {eps: (steps_to(err_so, eps), steps_to(err_ph, eps)) for eps in args.targets}
        st["show_steps"] = [j for j in (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 60) if j <= args.history]
        print("steps to eps:", st["steps"], flush=True)
        for eps in args.targets:
            js, jp = st["steps"][eps]
            if js is not None:
                st["compile_s"][f"eigs {js} steps"] = timed(so_["top_fixed"](next(keys), js))[0]
                tasks[f"sde_opt eps={eps}"] = lambda js=js: so_["top_fixed"](next(keys), js)
                tasks[f"eigenthings eps={eps}"] = lambda js=js: eo["top"](max(js, 1))
            if jp is not None:
                tasks[f"PyHessian eps={eps}"] = lambda jp=jp: ph["top"](maxIter=jp, tol=-1.0)
    if "defaults" in args.tasks:  # 3.
        st["compile_s"]["hessian_eigs"] = timed(so_["top"](next(keys)))[0]
        st["compile_s"]["hessian_eigs min_iter=1"] = timed(so_["top"](next(keys), min_iter=1))[0]
        tasks.update({
            "sde_opt hessian_eigs(k=1), defaults": lambda: so_["top"](next(keys)),
            "sde_opt hessian_eigs(k=1, min_iter=1)": lambda: so_["top"](next(keys), min_iter=1),
            "PyHessian eigenvalues(top_n=1), default tol=1e-3": lambda: ph["top"](),
            "PyHessian eigenvalues(top_n=1), tol=1e-6": lambda: ph["top"](maxIter=300, tol=1e-6),
            "eigenthings lanczos(k=1), default (2 steps)": lambda: eo["top"](),
            "eigenthings lanczos(k=1), 20 steps": lambda: eo["top"](20),
        })
    if "trace" in args.tasks:  # 4. the pilot and the equal-s.e. probe counts
        plus = so.curvature.HutchPlusPlus()
        st["sigma1"] = float(np.std(np.asarray(so.hessian_trace(prob, prob.theta0, key=next(keys),
                                                                n_probes=args.pilot).samples), ddof=1))
        st["se_runs"], st["m"], st["ran"] = {}, {}, {}
        for n in args.hutch_n:
            runs = [timed(so_["trace"](next(keys), n, plus)) for _ in range(2)]  # the first compiles
            st["compile_s"][f"Hutch++ n={n}"] = runs[0][0]
            st["se_runs"][n] = [v[1] for _, v, _ in runs]
            m = max(2, math.ceil((st["sigma1"] / math.sqrt(np.mean(np.square(st["se_runs"][n])))) ** 2))
            st["m"][n], st["ran"][n] = m, min(m, args.max_probes)
            tasks[f"sde_opt Hutch++ n={n}"] = lambda n=n: so_["trace"](next(keys), n, plus)
            tasks[f"PyHessian Hutchinson n={n}"] = lambda n=n: ph["trace"](st["ran"][n])
            tasks[f"eigenthings Hutch++ n={n}"] = lambda n=n: eo["trace"](n)
        print(f"sigma1 {st['sigma1']:.3f}, se++ {st['se_runs']}, m {st['m']}", flush=True)
    if "density" in args.tasks:  # 5.
        st["compile_s"]["density"] = timed(so_["density"](next(keys)))[0]
        tasks[f"sde_opt hessian_density(n_iter={args.density_iter})"] = lambda: so_["density"](next(keys))
        tasks[f"PyHessian density(iter={args.density_iter})"] = lambda: ph["density"]()
    st["rss"]["after compiling"] = _maxrss_mb()
    st["runs"] = {name: [] for name in tasks}

    def write(done):
        text = report(st, args, done)
        if args.markdown:
            pathlib.Path(args.markdown).write_text(text)
        return text

    for rnd in range(args.repeats):  # every task once per round, the libraries interleaved
        for name, make in tasks.items():
            st["runs"][name].append(timed(make()))
            t, v, h = st["runs"][name][-1]
            shown = v if np.ndim(v) == 0 or len(np.ravel(v)) < 3 else ""
            print(f"round {rnd}: {name}: {t:.2f} s, {h} products, {shown}", flush=True)
        st["rss"]["peak"] = _maxrss_mb()
        write(False)
    st["load1"] = os.getloadavg()[0]
    st["rss"]["peak"] = _maxrss_mb()
    print(write(True))


if __name__ == "__main__":
    main()
