"""Mini-batch noise at network scale: one VJP draw against the per-example gradient matrix.

Two measurements (float32, CPU unless JAX finds an accelerator), in one process each:

``cnn``: a Flax linen CNN of 151,287 parameters (3×3 conv 3→16, 3×3 conv 16→32, 2×2
average pool, dense 2048→71, dense 71→10; cross-entropy) on 512 synthetic 16×16×3
images. Times of one full-batch gradient and of one ``SGDSDE(MinibatchNoise())`` step
(``dyn.step`` under ``eqx.filter_jit``): *before*, the draw ``Gcᵀz/√N`` through the
``N × d`` matrix of per-example gradients (the dense path this package used up to
964525d, re-created here as a noise value), and *after*, ``so.MinibatchNoise()`` (one
VJP of the per-example losses). Medians of ``--repeats`` interleaved runs, after a
compile run, in units of the full-batch gradient.

``memory``: a wide MLP (256 → 2048 → 256 → 10 by default, d ≈ 1.06·10⁶) on 10,000
synthetic examples with ``chunk_size``: one VJP draw, one chunked gradient and one
``SGDSDE`` step; the peak resident memory (``resource.getrusage`` maxrss) of the process
before and after, and the size the per-example matrix would have had.

    PYTHONPATH=. python benchmarks/bench_networks_noise.py cnn --repeats 3
    PYTHONPATH=. python benchmarks/bench_networks_noise.py memory --n-examples 10000 --chunk-size 1000
    PYTHONPATH=. python benchmarks/bench_networks_noise.py conv-loop
    PYTHONPATH=. python benchmarks/bench_networks_noise.py noise-eigs --repeats 2

``noise-eigs``: ``so.noise_eigs(k=5)`` of the CNN on 512 images in units of full-batch
gradients, against the two routes through per-example gradients.

``conv-loop``: the CNN's gradient over 4 chunks in a rolled and an unrolled ``lax.scan``.
"""

from __future__ import annotations

import argparse
import resource
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sde_opt as so


class DensePerExampleNoise(so.AbstractNoise):
    """The pre-VJP draw: form the centred ``N × d`` per-example gradients, then ``Gcᵀz/√N``."""

    def covariance(self, problem, theta):
        return so.MinibatchNoise().covariance(problem, theta)

    def factor(self, problem, theta):
        return so.MinibatchNoise().factor(problem, theta)

    def n_normals(self, problem, dim):
        return problem.n_examples

    def apply_factor(self, problem, theta, z):
        g = problem.per_example_grads(theta)
        gc = g - jnp.mean(g, axis=0)
        return gc.T @ z / jnp.sqrt(gc.shape[0])


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time(f, *args, repeats: int):
    jax.block_until_ready(f(*args))  # compile
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        out.append(time.perf_counter() - t0)
    return out


def _xent(logits, label):
    return jax.nn.logsumexp(logits) - logits[label]


def _cnn(nn, n):
    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(16, (3, 3))(x))
            x = nn.relu(nn.Conv(32, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
            x = nn.relu(nn.Dense(71)(x.reshape(x.shape[:-3] + (-1,))))
            return nn.Dense(10)(x)

    kx, ky, kp = jr.split(jr.key(0), 3)
    data = {"x": jr.normal(kx, (n, 16, 16, 3)), "y": jr.randint(ky, (n,), 0, 10)}
    net = CNN()
    variables = net.init(kp, data["x"][:1])
    return net, variables, data


def cnn_problem(n: int, chunk_size=None) -> so.Problem:
    """The CNN as a ``so.Problem`` on ``n`` synthetic images (shared by the other benchmarks)."""
    from flax import linen as nn

    net, variables, data = _cnn(nn, n)
    loss = lambda var, ex: _xent(net.apply(var, ex["x"][None])[0], ex["y"])  # noqa: E731
    return so.Problem(loss, data, params=variables, chunk_size=chunk_size, name="cnn")


def cnn(args):
    from flax import linen as nn

    net, variables, data = _cnn(nn, args.n_examples)
    n = args.n_examples
    loss = lambda var, ex: _xent(net.apply(var, ex["x"][None])[0], ex["y"])  # noqa: E731
    prob = so.Problem(loss, data, params=variables, chunk_size=args.chunk_size)
    theta = prob.theta0
    print(f"CNN: d = {prob.dim:,}, N = {n}, chunk_size = {args.chunk_size}, backend = {jax.default_backend()}")
    grad = eqx.filter_jit(lambda p, th: p.grad(th))
    step = eqx.filter_jit(lambda dyn, th, key: dyn.step(th, 0.0, dyn.lr, key))
    b = min(64, n)
    before = so.SGDSDE(prob, 0.05, b, DensePerExampleNoise())
    after = so.SGDSDE(prob, 0.05, b, so.MinibatchNoise())
    key = jr.key(1)
    # same key: the two steps must agree (float32 rounding)
    diff = jnp.max(jnp.abs(step(before, theta, key) - step(after, theta, key)))
    print(f"max |step_dense - step_vjp| = {float(diff):.2e}")
    draw = eqx.filter_jit(lambda p, th, z: so.MinibatchNoise().apply_factor(p, th, z))
    z = jr.normal(jr.key(2), (n,))
    rows = {"grad": [], "vjp draw": [], "before": [], "after": []}
    for _ in range(args.repeats):  # interleaved
        rows["grad"] += _time(grad, prob, theta, repeats=1)
        rows["vjp draw"] += _time(draw, prob, theta, z, repeats=1)
        rows["before"] += _time(step, before, theta, key, repeats=1)
        rows["after"] += _time(step, after, theta, key, repeats=1)
    g = float(np.median(rows["grad"]))
    for name in rows:
        t = float(np.median(rows[name]))
        print(f"{name:>8}: {t:8.3f} s  = {t / g:6.2f} gradients   (runs: {', '.join(f'{x:.3f}' for x in rows[name])})")


def conv_loop(args):
    """The CNN's gradient over 4 chunks of 128 images in a rolled and an unrolled lax.scan,
    against the unchunked gradient: XLA CPU runs convolutions inside a rolled loop slowly."""
    from flax import linen as nn

    net, variables, data = _cnn(nn, args.n_examples)
    x, y = data["x"], data["y"]

    def loss(v, x, y):
        return jnp.sum(jax.vmap(lambda xi, yi: _xent(net.apply(v, xi[None])[0], yi))(x, y))

    g = jax.jit(jax.grad(loss))
    print(f"unchunked gradient: {np.median(_time(g, variables, x, y, repeats=args.repeats)):.3f} s")
    c = 128
    xc, yc = x.reshape((-1, c) + x.shape[1:]), y.reshape(-1, c)
    for unroll in (1, True):
        def chunked(v, unroll=unroll):
            def body(acc, xs):
                return jax.tree_util.tree_map(jnp.add, acc, jax.grad(loss)(v, *xs)), None
            return jax.lax.scan(body, jax.tree_util.tree_map(jnp.zeros_like, v), (xc, yc), unroll=unroll)[0]
        t = np.median(_time(jax.jit(chunked), variables, repeats=args.repeats))
        print(f"chunked gradient, scan unroll={unroll}: {t:.3f} s")


def noise_eigs(args):
    """``so.noise_eigs(k)`` on the CNN in units of full-batch gradients: the default route
    (at this N·d, Lanczos on ``D v`` streamed by one JVP and one VJP a chunk) against the
    routes through per-example gradients (``vmap(grad)``): the Gram matrix of all N, and
    the streamed products of the code before (per-example gradients of every chunk at
    every product, re-created here as an operator)."""
    prob = cnn_problem(args.n_examples, args.chunk_size)
    theta, k = prob.theta0, args.k
    print(f"CNN: d = {prob.dim:,}, N = {prob.n_examples}, chunk_size = {prob.chunk_size}, k = {k}")
    grad = eqx.filter_jit(lambda p, th: p.grad(th))
    g = float(np.median(_time(grad, prob, theta, repeats=args.repeats)))

    class PerExampleD(so.curvature.AbstractOperator):  # D v through each chunk's per-example gradients
        problem: so.Problem
        theta: jax.Array

        def linear(self):
            def mv(v):
                gs = self.problem.per_example_grads(self.theta)
                gc = gs - jnp.mean(gs, axis=0)
                return gc.T @ (gc @ v) / gs.shape[0]

            return mv

        @property
        def dim(self):
            return int(self.theta.shape[0])

        @property
        def dtype(self):
            return self.theta.dtype

    runs = {
        "so.noise_eigs (JVP + VJP per chunk)": lambda: so.noise_eigs(prob, theta, k, key=jr.key(0))[0],
        "Gram route (N per-example gradients once)": lambda: so.noise_eigs(prob, theta, k, key=jr.key(0),
                                                                           streaming=False)[0],
        "Lanczos on per-example D v (the code before)": lambda: so.curvature.eigs(
            PerExampleD(prob, theta), k, key=jr.key(0), loop="host").values,
    }
    vals = {}
    for name, f in runs.items():
        ts = _time(f, repeats=args.repeats)
        vals[name] = np.asarray(f())
        t = float(np.median(ts))
        print(f"{name:>46}: {t:7.2f} s = {t / g:6.1f} gradients; top {k}: {np.round(vals[name], 4)}", flush=True)
    print(f"full-batch gradient: {g:.3f} s")
    # per-example gradients of one chunk of 128 images: vmap(grad) (what Problem.per_example_grads runs)
    # against the Jacobian of the chunk's loss vector (jacrev) and a loop of single-example gradients
    chunk = jax.tree_util.tree_map(lambda a: a[:128], prob.data)
    ways = {
        "vmap(grad)": eqx.filter_jit(lambda p, th, ch: jax.vmap(jax.grad(p.example_loss), (None, 0))(th, ch)),
        "jacrev(chunk losses)": eqx.filter_jit(lambda p, th, ch: jax.jacrev(p.chunk_losses)(th, ch)),
        "lax.map(grad), one example at a time": eqx.filter_jit(
            lambda p, th, ch: jax.lax.map(lambda ex: jax.grad(p.example_loss)(th, ex), ch)),
    }
    for name, f in ways.items():
        t = float(np.median(_time(f, prob, theta, chunk, repeats=args.repeats)))
        print(f"per-example gradients of 128 images, {name:>37}: {t:7.3f} s = {t / g * prob.n_examples / 128:6.1f} "
              "gradients per N examples", flush=True)


def memory(args):
    n, d_in, h1, h2 = args.n_examples, 256, args.width, 256
    kx, ky, kp = jr.split(jr.key(0), 3)
    data = {"x": jr.normal(kx, (n, d_in)), "y": jr.randint(ky, (n,), 0, 10)}
    ks = jr.split(kp, 3)
    params = [
        {"w": jr.normal(ks[0], (d_in, h1)) / np.sqrt(d_in), "b": jnp.zeros(h1)},
        {"w": jr.normal(ks[1], (h1, h2)) / np.sqrt(h1), "b": jnp.zeros(h2)},
        {"w": jr.normal(ks[2], (h2, 10)) / np.sqrt(h2), "b": jnp.zeros(10)},
    ]

    def loss(p, ex):
        x = ex["x"]
        for layer in p[:-1]:
            x = jnp.tanh(x @ layer["w"] + layer["b"])
        return _xent(x @ p[-1]["w"] + p[-1]["b"], ex["y"])

    prob = so.Problem(loss, data, params=params, chunk_size=args.chunk_size)
    theta = prob.theta0
    d = prob.dim
    jax.block_until_ready(theta)
    base = _maxrss_mb()
    print(f"wide MLP: d = {d:,}, N = {n:,}, chunk_size = {args.chunk_size}, backend = {jax.default_backend()}")
    print(f"per-example gradient matrix would be N·d·4 B = {n * d * 4 / 2**30:.1f} GiB")
    print(f"maxrss after building the problem: {base:8.0f} MB")
    noise = so.MinibatchNoise()
    draw = eqx.filter_jit(lambda p, th, z: noise.apply_factor(p, th, z))
    z = jr.normal(jr.key(1), (n,))
    t_draw = _time(draw, prob, theta, z, repeats=args.repeats)
    rss_draw = _maxrss_mb()
    print(f"maxrss after one VJP draw:         {rss_draw:8.0f} MB  (+{rss_draw - base:.0f} MB)")
    grad = eqx.filter_jit(lambda p, th: p.grad(th))
    t_grad = _time(grad, prob, theta, repeats=args.repeats)
    dyn = so.SGDSDE(prob, 0.05, 64, noise)
    step = eqx.filter_jit(lambda dyn, th, key: dyn.step(th, 0.0, dyn.lr, key))
    t_step = _time(step, dyn, theta, jr.key(2), repeats=args.repeats)
    rss = _maxrss_mb()
    g = float(np.median(t_grad))
    print(f"maxrss after gradient and SGDSDE step: {rss:8.0f} MB")
    print(f"gradient: {g:.3f} s; VJP draw: {np.median(t_draw):.3f} s = {np.median(t_draw) / g:.2f} gradients; "
          f"SGDSDE step: {np.median(t_step):.3f} s = {np.median(t_step) / g:.2f} gradients")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["cnn", "memory", "conv-loop", "noise-eigs"])
    ap.add_argument("--k", type=int, default=5, help="eigenpairs (noise-eigs)")
    ap.add_argument("--n-examples", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.which in ("cnn", "conv-loop", "noise-eigs"):
        args.n_examples = args.n_examples or 512
        {"cnn": cnn, "conv-loop": conv_loop, "noise-eigs": noise_eigs}[args.which](args)
    else:
        args.n_examples = args.n_examples or 10_000
        args.chunk_size = args.chunk_size or 1000
        memory(args)


if __name__ == "__main__":
    main()
