"""Landscape slices: ``so.loss_slice`` against the ``loss-landscapes`` package (PyTorch), in one process.

Two networks, float32, CPU (unless JAX finds an accelerator; torch stays on the CPU):

* ``mlp``: the digits MLP of ``so.problems.mlp_digits`` (64 → 32 → 10, tanh, cross-entropy),
  512 examples, d = 2,410;
* ``cnn``: the Flax linen CNN of ``bench_networks_noise.py`` (3×3 conv 3→16, 3×3 conv 16→32,
  2×2 average pool, dense 2048→71, dense 71→10; cross-entropy), d = 151,287, on
  ``--cnn-examples`` synthetic 16×16×3 images.

Both at their initial weights, the same weights copied into an equivalent ``torch.nn`` model
(Flax/our ``(in, out)`` kernels transposed to torch's ``(out, in)``, the conv kernels from
``(kh, kw, in, out)`` to ``(out, in, kh, kw)``, the CNN's features flattened in Flax's
``(H, W, C)`` order), the same data, the same two directions (Gaussian, filter-normalised by
``so.slices.random_directions``, biases zero) and the same 51 × 51 grid ``α, β ∈ [−1, 1]``.

loss-landscapes 3.0.6 takes directions only as end points:
``planar_interpolation(start, end_one, end_two, metric, steps)`` walks the grid
``start + i·(end_one − start)/steps + j·(end_two − start)/steps`` by in-place additions
to the model's parameters, evaluating ``metric(model)`` (here its ``Loss(cross_entropy, x,
y)``, one forward pass of all examples) at each of the ``steps²`` points. So ``start`` is
``θ − δ₁ − δ₂`` and ``end_i = start + steps·h·δᵢ`` with ``h = 2/50``. Its zig-zag walk
evaluates the even rows at ``j = 1 … steps`` and the odd rows at ``j = 0 … steps−1`` (it
steps before it evaluates on the way out, after on the way back); the comparison evaluates
``so.loss_slice`` at those very points (a 51 × 52 grid) and checks the two agree.

A third column, the *plain torch loop*, is torch without the package: for each point one
``vector_to_parameters(θ + αδ₁ + βδ₂)`` and one forward pass under ``no_grad`` (after a
warm-up row), to tell what of the ratio is loss-landscapes' own overhead and what is JAX.

Times: first, sde_opt alone for each ``--chunk-sizes`` (its first call, compile + run, and the
median of ``--repeats`` later calls); then ``--rounds`` interleaved rounds of sde_opt (the
fastest chunk size, compiled), loss-landscapes and the plain torch loop, so that the load of
a shared machine hits all three alike; the ratios are of the medians over those rounds.
Absolute times on a shared machine are noise: read the ratios.

    pip install "torch==2.13.0+cpu" loss-landscapes   # the competitor (CPU torch)
    PYTHONPATH=. python benchmarks/bench_slices.py [--repeats 5] [--rounds 3] [--cnn-examples 64] [--chunk-sizes 1,4,16,None]
    PYTHONPATH=. python benchmarks/bench_slices.py --fast     # tiny sizes, a smoke test (torch optional)
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sde_opt as so
from bench_networks_noise import cnn_problem


def _cnn_problem(n):
    return cnn_problem(n)


def _mlp_problem(n):
    return so.problems.mlp_digits(key=jr.key(0), hidden=(32,), n_examples=n)


# ----------------------------------------------------------------------------- torch twins
def _torch_mlp(torch, prob, theta):
    layers = prob.unravel(theta)
    mods = []
    for i, layer in enumerate(layers):
        lin = torch.nn.Linear(*layer["w"].shape)
        lin.weight.data = torch.tensor(np.asarray(layer["w"]).T.copy())
        lin.bias.data = torch.tensor(np.asarray(layer["b"]).copy())
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(torch.nn.Tanh())
    return torch.nn.Sequential(*mods)


def _torch_cnn(torch, prob, theta):
    p = prob.unravel(theta)
    nn = torch.nn

    class TorchCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.pool = nn.AvgPool2d(2)
            self.fc1 = nn.Linear(2048, 71)
            self.fc2 = nn.Linear(71, 10)

        def forward(self, x):  # x: NCHW
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = self.pool(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Flax's (H, W, C) order
            return self.fc2(torch.relu(self.fc1(x)))

    m = TorchCNN()
    t = lambda a: torch.tensor(np.ascontiguousarray(np.asarray(a)))  # noqa: E731
    for name, conv in (("Conv_0", m.conv1), ("Conv_1", m.conv2)):
        conv.weight.data = t(np.transpose(np.asarray(p[name]["kernel"]), (3, 2, 0, 1)))
        conv.bias.data = t(p[name]["bias"])
    for name, lin in (("Dense_0", m.fc1), ("Dense_1", m.fc2)):
        lin.weight.data = t(np.asarray(p[name]["kernel"]).T)
        lin.bias.data = t(p[name]["bias"])
    return m


def _torch_data(torch, prob, kind):
    x = np.asarray(prob.data["x"])
    if kind == "cnn":
        x = np.transpose(x, (0, 3, 1, 2))  # NHWC -> NCHW
    return torch.tensor(np.ascontiguousarray(x)), torch.tensor(np.asarray(prob.data["y"]).astype(np.int64))


# ----------------------------------------------------------------------------- measurement
def _median_time(f, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        out.append(time.perf_counter() - t0)
    return float(np.median(out)), out


def run_case(kind, args, torch, ll):
    n = args.cnn_examples if kind == "cnn" else args.mlp_examples
    prob = _cnn_problem(n) if kind == "cnn" else _mlp_problem(n)
    theta = prob.theta0
    dirs = so.slices.random_directions(prob, theta, key=jr.key(1))
    m = args.steps
    g = jnp.linspace(-1.0, 1.0, m, dtype=theta.dtype)
    h = 2.0 / (m - 1)
    print(f"\n{kind}: d = {prob.dim:,}, N = {n}, grid {m} x {m}, backend = {jax.default_backend()}")
    rows = []
    for c in args.chunk_sizes:
        t0 = time.perf_counter()
        ours_grid = jax.block_until_ready(so.loss_slice(prob, theta, dirs, grid=(g, g), chunk_size=c))
        first = time.perf_counter() - t0
        t, runs = _median_time(lambda c=c: so.loss_slice(prob, theta, dirs, grid=(g, g), chunk_size=c), args.repeats)
        label = f"{so.slices.default_chunk_size(m * m, prob.dim)} (default)" if c is None else str(c)
        rows.append((label, first, t))
        print(f"  sde_opt chunk_size={label}: first call {first:.3f} s (compile {max(first - t, 0):.3f} s), "
              f"then {t:.4f} s  (runs: {', '.join(f'{x:.3f}' for x in runs)})")
    best_label, best_first, best = min(rows, key=lambda r: r[2])
    best_c = int(best_label.split()[0])
    result = {"kind": kind, "d": prob.dim, "n": n, "m": m, "rows": rows, "best": (best_label, best_first, best)}
    if ll is None:
        print("  loss-landscapes: not installed (pip install 'torch==2.13.0+cpu' loss-landscapes); skipped")
        return result
    model_of = _torch_cnn if kind == "cnn" else _torch_mlp
    x, y = _torch_data(torch, prob, kind)
    metric = ll.metrics.Loss(torch.nn.functional.cross_entropy, x, y)
    start = theta - dirs[0] - dirs[1]
    ends = (start + m * h * dirs[0], start + m * h * dirs[1])

    def theirs_once():
        models = [model_of(torch, prob, p).eval() for p in (start, *ends)]
        with torch.no_grad():
            return ll.planar_interpolation(*models, metric, steps=m)

    # torch itself, without the package: one flat vector per point, one forward each
    model = model_of(torch, prob, theta).eval()
    params = list(model.parameters())

    def flat(v):  # a flat JAX vector in torch's parameter order and layout (the twin is linear in v)
        return torch.nn.utils.parameters_to_vector(model_of(torch, prob, v).parameters()).detach()

    th_t, d_t = flat(theta), torch.stack([flat(dirs[0]), flat(dirs[1])])
    gg = [float(a) for a in np.asarray(g)]

    def loop(rows=m):
        out = np.empty((m, m), np.float32)
        with torch.no_grad():
            for i in range(rows):
                for j in range(m):
                    torch.nn.utils.vector_to_parameters(th_t + gg[i] * d_t[0] + gg[j] * d_t[1], params)
                    out[i, j] = torch.nn.functional.cross_entropy(model(x), y).item()
        return out

    ours_f = lambda: so.loss_slice(prob, theta, dirs, grid=(g, g), chunk_size=best_c)  # noqa: E731
    times = {"sde_opt": [], "loss-landscapes": [], "torch loop": []}
    if args.torch_loop:
        loop(rows=1)  # warm-up
    for _ in range(args.rounds):  # interleaved, so that the machine's load hits all alike
        times["sde_opt"].append(_median_time(ours_f, 1)[0])
        t0 = time.perf_counter()
        theirs = theirs_once()
        times["loss-landscapes"].append(time.perf_counter() - t0)
        if args.torch_loop:
            t0 = time.perf_counter()
            plain = loop()
            times["torch loop"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    for k, v in times.items():
        if v:
            print(f"  {k:>15}: {med[k]:8.3f} s  ({1e3 * med[k] / m**2:.3f} ms per point; runs: "
                  f"{', '.join(f'{x:.3f}' for x in v)})")
    t_ll, best = med["loss-landscapes"], med["sde_opt"]
    if args.torch_loop:
        rel_loop = float(np.max(np.abs(plain - np.asarray(ours_grid)) / np.abs(np.asarray(ours_grid))))
        print(f"  plain torch loop against sde_opt: max relative difference {rel_loop:.2e}")
        result.update(loop=med["torch loop"], rel_loop=rel_loop)
    # the points loss-landscapes evaluated: row i at β_j = -1 + j h, j = 1..m (even i), 0..m-1 (odd i)
    gb = -1.0 + h * jnp.arange(m + 1, dtype=theta.dtype)
    ours52 = np.asarray(so.loss_slice(prob, theta, dirs, grid=(g, gb), chunk_size=best_c))
    want = np.stack([ours52[i, 1:] if i % 2 == 0 else ours52[i, :m] for i in range(m)])
    rel = float(np.max(np.abs(theirs - want) / np.abs(want)))
    naive = float(np.max(np.abs(theirs - ours52[:, :m]) / np.abs(ours52[:, :m])))
    print(f"  agreement at loss-landscapes' points: max relative difference {rel:.2e} "
          f"(against the plain 51 x 51 grid, ignoring its shifted rows: {naive:.2e})")
    ok = rel < 1e-4
    print(f"  agree to rtol 1e-4: {ok}")
    print(f"  ratio loss-landscapes / sde_opt (interleaved, chunk_size={best_label}): {t_ll / best:.1f}x; "
          f"including sde_opt's compile: {t_ll / (best_first - result['best'][2] + best):.1f}x")
    result.update(ll=t_ll, rel=rel, ok=ok, ours=best)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--cases", default="mlp,cnn")
    ap.add_argument("--steps", type=int, default=51)
    ap.add_argument("--mlp-examples", type=int, default=512)
    ap.add_argument("--cnn-examples", type=int, default=64)
    ap.add_argument("--chunk-sizes", default="2,16,128,None")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of sde_opt, loss-landscapes, torch loop")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-torch", action="store_true", help="sde_opt only, even where torch is installed")
    ap.add_argument("--no-torch-loop", dest="torch_loop", action="store_false",
                    help="skip the plain torch loop (the baseline without loss-landscapes' overheads)")
    args = ap.parse_args()
    if args.fast:
        args.steps, args.mlp_examples, args.cnn_examples, args.repeats, args.rounds = 5, 64, 8, 1, 1
        args.chunk_sizes = "4,None"
    args.chunk_sizes = [None if c == "None" else int(c) for c in args.chunk_sizes.split(",")]
    try:
        if args.no_torch:
            raise ImportError
        import loss_landscapes as ll
        import loss_landscapes.metrics  # noqa: F401
        import torch
    except ImportError:
        torch = ll = None
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"torch {getattr(torch, '__version__', '-')} ({torch.get_num_threads() if torch else '-'} threads), "
          f"python {platform.python_version()}")
    results = [run_case(kind, args, torch, ll) for kind in args.cases.split(",")]
    print("\nsde_opt by chunk size (sde_opt alone, median of --repeats):\n")
    print("| model | d | N | grid | chunk_size | first call (compile + run) | steady |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for label, first, t in r["rows"]:
            print(f"| {r['kind']} | {r['d']:,} | {r['n']} | {r['m']}×{r['m']} | {label} | {first:.2f} s | {t:.3f} s |")
    if any("ll" in r for r in results):
        print("\nAgainst loss-landscapes and a plain torch loop (interleaved rounds, medians):\n")
        print("| model | sde_opt (chunk_size) | loss-landscapes | ratio | max rel. diff | plain torch loop | ratio |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            if "ll" not in r:
                continue
            loop_t = f"{r['loop']:.2f} s" if "loop" in r else "—"
            loop_r = f"{r['loop'] / r['ours']:.1f}×" if "loop" in r else "—"
            print(f"| {r['kind']} | {r['ours']:.3f} s ({r['best'][0]}) | {r['ll']:.2f} s | {r['ll'] / r['ours']:.1f}× | "
                  f"{r['rel']:.1e} | {loop_t} | {loop_r} |")

if __name__ == "__main__":
    main()
