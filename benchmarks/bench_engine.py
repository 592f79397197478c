"""Engine benchmark: one Euler–Maruyama ensemble, four ways, in one process.

The SDE is the SGD model of a quadratic with a diagonal Hessian (an Ornstein–Uhlenbeck
process), ``dθ = −Hθ dt + √lr dW`` with ``H = diag(1 … 10)`` (``so.landscapes.quadratic``,
so the drift is autodiff's gradient with a dense ``H``; ``so.IsotropicNoise(1)``, ``B = 1``),
``lr = dt = 0.01``, in float32, for ``n_steps`` steps from ``θ0 = 1``; every method keeps the
endpoint only.

(a) ``so.simulate``  (``save_every=n_steps``)
(b) diffrax ``diffeqsolve`` + ``VirtualBrownianTree``, one solve per path under ``jax.vmap``
    (the way diffrax documents ensembles; ``Euler``, constant step, ``SaveAt(t1=True)``,
    tree tolerance ``dt/2``)
(c) diffrax ``diffeqsolve`` + ``UnsafeBrownianPath`` on one batched ``(paths, d)`` state
    (``adjoint=ForwardMode()``, which ``UnsafeBrownianPath`` requires)
(d) the random-number bound: the same number of float32 normals (``paths × steps × d``)
    drawn by one ``jax.random.normal`` call;
and, for reference only, the same normals drawn step by step in a loop (``stepwise``).

(a)-(c) use the same problem, drift and diffusion code. Times exclude compilation
(diffrax and the bound are compiled ahead of time; ``so.simulate`` is called once first)
and are the best of ``--repeats`` runs, each ended by ``block_until_ready``, with the
methods interleaved. On a shared machine absolute times are noise; read the ratios.

    python benchmarks/bench_engine.py            # the full table (~20 min on 2 CPUs, mostly VBT)
    python benchmarks/bench_engine.py --fast     # tiny sizes, for CI
    python benchmarks/bench_engine.py --markdown RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np

import sde_opt as so

LR = 0.01


def make_dynamics(d: int) -> so.SGDSDE:
    hessian = jnp.diag(jnp.linspace(1.0, 10.0, d, dtype=jnp.float32))
    problem = so.landscapes.quadratic(hessian)
    return so.SGDSDE(problem, lr=LR, batch_size=1, noise=so.IsotropicNoise(1.0))


# ---------------------------------------------------------------------------- the methods
# Each returns (run, compile_seconds): ``run()`` computes the ensemble's endpoints (or the
# normals) without compiling. diffrax and the bound are compiled ahead of time
# (``jit(...).lower(...).compile()``, timed); ``so.simulate`` is a Python function around
# its kernel, so its compile time is its first call minus its best later call.
def _aot(fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return (lambda: compiled(*args)), time.perf_counter() - t


def ours(dyn, y0, key, n_paths, n_steps):
    def run():
        return so.simulate(dyn, y0, key=key, n_paths=n_paths, n_steps=n_steps, save_every=n_steps).final

    return run, None


def diffrax_vbt(dyn, y0, key, n_paths, n_steps):
    """One ``diffeqsolve`` per path, vmapped, each with its own ``VirtualBrownianTree``."""
    d = y0.shape[0]
    t1 = n_steps * LR

    def solve(keys):
        def one(k):
            bm = dfx.VirtualBrownianTree(0.0, t1, tol=LR / 2, shape=(d,), key=k)
            sol = dfx.diffeqsolve(
                dyn.terms(bm), dfx.Euler(), 0.0, t1, LR, y0,
                saveat=dfx.SaveAt(t1=True), max_steps=n_steps,
            )
            return sol.ys[-1]

        return jax.vmap(one)(keys)

    return _aot(solve, jr.split(key, n_paths))


def diffrax_unsafe(dyn, y0, key, n_paths, n_steps):
    """One ``diffeqsolve`` on the batched ``(paths, d)`` state with ``UnsafeBrownianPath``."""
    d = y0.shape[0]
    t1 = n_steps * LR
    drift = jax.vmap(dyn.drift, (None, 0))
    diffusion = jax.vmap(dyn.diffusion_apply, (None, 0, 0))
    struct = jax.ShapeDtypeStruct((n_paths, d), y0.dtype)

    def vf(t, y, args):
        return lx.FunctionLinearOperator(lambda z: diffusion(t, y, z), struct)

    def solve(k):
        bm = dfx.UnsafeBrownianPath(shape=struct, key=k)
        terms = dfx.MultiTerm(dfx.ODETerm(lambda t, y, args: drift(t, y)), dfx.ControlTerm(vf, bm))
        sol = dfx.diffeqsolve(
            terms, dfx.Euler(), 0.0, t1, LR, jnp.broadcast_to(y0, (n_paths, d)),
            saveat=dfx.SaveAt(t1=True), max_steps=n_steps, adjoint=dfx.ForwardMode(),
        )
        return sol.ys[-1]

    return _aot(solve, key)


def normal_bound(dyn, y0, key, n_paths, n_steps):
    """The same number of normals, in one ``jax.random.normal`` call."""
    count = n_paths * n_steps * y0.shape[0]
    return _aot(lambda k: jr.normal(k, (count,), jnp.float32), key)


def stepwise_normals(dyn, y0, key, n_paths, n_steps):
    """For reference (not the bound): the same normals drawn step by step, one
    ``(paths, d)`` ``jax.random.normal`` call per step of a ``fori_loop``, summed so that
    nothing is optimised away. One call for all ``paths × steps × d`` normals writes a
    4 GB array at d = 100 and 10,000 paths, which is slower per normal than in-cache draws."""
    shape = (n_paths, y0.shape[0])

    def draw(k):
        body = lambda j, acc: acc + jr.normal(jr.fold_in(k, j), shape, jnp.float32)
        return jax.lax.fori_loop(0, n_steps, body, jnp.zeros(shape, jnp.float32))

    return _aot(draw, key)


METHODS = {"ours": ours, "vbt": diffrax_vbt, "unsafe": diffrax_unsafe, "bound": normal_bound,
           "stepwise": stepwise_normals}


# ---------------------------------------------------------------------------- timing
def _seconds(run):
    t = time.perf_counter()
    out = jax.block_until_ready(run())
    return time.perf_counter() - t, out


def bench_case(d, n_paths, n_steps, repeats, budget, key):
    """Best time, compile time and endpoints of every method. Methods are timed in
    interleaved rounds (so that load from other processes hits them alike); a method stops
    repeating once it has used ``budget`` seconds (but is timed at least once)."""
    dyn = make_dynamics(d)
    y0 = jnp.ones(d, jnp.float32)
    runs, compile_s, times, ends = {}, {}, {}, {}
    for name, make in METHODS.items():
        runs[name], compile_s[name] = make(dyn, y0, key, n_paths, n_steps)
        times[name] = []
        if compile_s[name] is None:  # so.simulate: compiles on its first call
            compile_s[name], _ = _seconds(runs[name])
    for _ in range(repeats):
        for name, run in runs.items():
            if times[name] and sum(times[name]) > budget:
                continue
            elapsed, out = _seconds(run)
            times[name].append(elapsed)
            if name in ("ours", "vbt", "unsafe"):  # endpoints, for the agreement check
                ends[name] = out
            del out
    best = {name: min(ts) for name, ts in times.items()}
    compile_s["ours"] = max(compile_s["ours"] - best["ours"], 0.0)
    return best, compile_s, ends


def exact_endpoint(n_steps, lam=1.0, theta0=1.0):
    """Mean and variance of Euler–Maruyama's endpoint for ``dθ = −λθ dt + √lr dW`` (the
    first coordinate, ``λ = 1``): ``θ_{k+1} = aθ_k + √(lr·dt) z``, ``a = 1 − λ dt``."""
    a = 1.0 - lam * LR
    mean = a**n_steps * theta0
    var = LR * LR * (1.0 - a ** (2 * n_steps)) / (1.0 - a**2)
    return mean, var


def agreement(ends, n_steps):
    """z-scores of each method's endpoint mean and variance (first coordinate) against the
    exact law of the Euler–Maruyama chain: all three must simulate the same ensemble."""
    mean, var = exact_endpoint(n_steps)
    out = {}
    for name, y in ends.items():
        x = np.asarray(y[:, 0], np.float64)
        n = x.shape[0]
        z_mean = (x.mean() - mean) / np.sqrt(var / n)
        z_var = (x.var(ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
        out[name] = (z_mean, z_var)
    return out


# ---------------------------------------------------------------------------- main
TARGETS = {(100, 10_000): {"bound": 0.70, "vbt": 15.0}, (2, 10_000): {"vbt": 40.0}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best is kept)")
    parser.add_argument("--budget", type=float, default=60.0, help="stop repeating a method after this many seconds")
    parser.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    parser.add_argument("--cases", default=None, help="only these d:paths cases, e.g. 100:10000,2:10000")
    args = parser.parse_args(argv)

    if args.fast:
        cases, n_steps = [(2, 64), (100, 64)], 20
    else:
        cases, n_steps = [(2, 1_000), (2, 10_000), (100, 1_000), (100, 10_000)], 1_000
    if args.cases:
        cases = [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",")]
    key = jr.key(0)
    env = (f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, diffrax {dfx.__version__}, "
           f"backend {jax.default_backend()} ({jax.device_count()} device), float32")
    print(f"{env}; {n_steps} steps, endpoint only; {os.cpu_count()} CPUs")
    print()

    header = ("| d | paths | ours (path-steps/s) | diffrax VBT | diffrax Unsafe | normal bound "
              "| ours/bound | ours/VBT | ours/Unsafe | ours/stepwise normals | compile ours / VBT / Unsafe (s) |")
    rows = [header, "|" + "---|" * 11]
    notes = []
    for d, n_paths in cases:
        best, compile_s, ends = bench_case(d, n_paths, n_steps, args.repeats, args.budget, key)
        work = n_paths * n_steps
        rate = {k: work / v for k, v in best.items()}
        ratio = {k: rate["ours"] / rate[k] for k in ("bound", "vbt", "unsafe", "stepwise")}
        print(f"d={d} paths={n_paths} steps={n_steps}: path-steps/s  ours {rate['ours']:.3g}  "
              f"VBT {rate['vbt']:.3g}  Unsafe {rate['unsafe']:.3g}  bound {rate['bound']:.3g}")
        print(f"  ratios: ours/bound = {ratio['bound']:.2f}  ours/VBT = {ratio['vbt']:.1f}x  "
              f"ours/Unsafe = {ratio['unsafe']:.2f}x  (ours/stepwise normals = {ratio['stepwise']:.2f})")
        print(f"  compile (s): ours {compile_s['ours']:.2f}  VBT {compile_s['vbt']:.2f}  "
              f"Unsafe {compile_s['unsafe']:.2f}  bound {compile_s['bound']:.2f}")
        z = agreement(ends, n_steps)
        print("  same law (z-scores of endpoint mean, variance vs the exact EM chain): "
              + "  ".join(f"{k} {zm:+.1f}, {zv:+.1f}" for k, (zm, zv) in z.items()))
        for k, target in TARGETS.get((d, n_paths), {}).items():
            met = ratio[k] >= target
            line = f"target ours/{k} >= {target:g} at d={d}, {n_paths:,} paths: {ratio[k]:.2f} ({'met' if met else 'MISSED'})"
            print("  " + line)
            notes.append(line)
        print(flush=True)
        rows.append(
            f"| {d} | {n_paths:,} | {rate['ours']:.3g} | {rate['vbt']:.3g} | {rate['unsafe']:.3g} "
            f"| {rate['bound']:.3g} | {ratio['bound']:.2f} | {ratio['vbt']:.1f}× | {ratio['unsafe']:.2f}× "
            f"| {ratio['stepwise']:.2f} "
            f"| {compile_s['ours']:.2f} / {compile_s['vbt']:.2f} / {compile_s['unsafe']:.2f} |"
        )
    table = "\n".join(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Measured {datetime.date.today().isoformat()} on a 2-core CPU (shared), {env}; "
                    f"{n_steps} Euler–Maruyama steps, endpoint only, best of {args.repeats} interleaved runs.\n\n")
            f.write(table + "\n\n")
            f.write("".join(f"- {line}\n" for line in notes))


if __name__ == "__main__":
    main()
