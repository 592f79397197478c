"""Ensembles of networks: real SGD on K networks (same start, independent mini-batches) on
the engine, against what a user would write by hand, in one process.

Models (float32): the Flax CNN of ``bench_networks_noise.py`` (151,287 parameters; two 3×3
convolutions) on ``--n-examples`` synthetic 16×16×3 images, and the digits MLP (64 → 32 →
10, tanh; 2,410 parameters) on 512 digits. SGD with lr 0.05 and batches of 64 drawn with
replacement. Every method starts from the same weights and runs ``steps`` steps of ``K``
networks:

* **ours**: ``so.simulate(so.SGD(problem, lr, B), theta0, n_paths=K, ...)`` (endpoint only;
  ``loop="auto"``: the steps of a convolutional model are driven from Python on CPU, one
  network per compiled call; the MLP runs in one compiled loop over steps with the K
  networks vmapped);
* **vmap**: ``jax.vmap`` over the seeds of a plain optax loop (``optax.sgd``, the batch
  indices from ``jr.choice``, a ``lax.fori_loop`` over steps), jitted;
* **lax.map**: the same loop, ``jax.lax.map`` over the seeds;
* **python loop**: a jitted optax step called from Python for each network and step.

Times exclude compilation (each method runs once first) and are the best of ``--repeats``;
the table reports seconds per network-step and the ratio to ours. On CPU the convolutional
alternatives are slow enough that they run with fewer networks and steps (``--small``),
per network-step that is the same work.

    PYTHONPATH=. python benchmarks/bench_ensembles.py [--markdown benchmarks/RESULTS_ensembles.md]
    PYTHONPATH=. python benchmarks/bench_ensembles.py --fast
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import sde_opt as so
from bench_networks_noise import cnn_problem

LR, B = 0.05, 64


def mlp_problem(n):
    return so.problems.mlp_digits(key=jr.key(0), hidden=(32,), n_examples=n)


def _best(f, repeats):
    jax.block_until_ready(f())
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        out.append(time.perf_counter() - t)
    return min(out)


def hand_written(problem, k, steps):
    """The optax loop a user writes: batch indices, mini-batch gradient, optax update."""
    opt = optax.sgd(LR)
    n = problem.n_examples

    def train(key):
        theta = problem.theta0

        def body(j, c):
            theta, st = c
            idx = jr.choice(jr.fold_in(key, j), n, (B,), replace=True)
            upd, st = opt.update(problem.batch_grad(theta, idx), st, theta)
            return optax.apply_updates(theta, upd), st

        return jax.lax.fori_loop(0, steps, body, (theta, opt.init(theta)))[0]

    keys = jax.vmap(jr.fold_in, (None, 0))(jr.key(1), jnp.arange(k))
    vm = jax.jit(jax.vmap(train))
    lm = jax.jit(lambda ks: jax.lax.map(train, ks))

    @jax.jit
    def step(theta, st, key, j):
        idx = jr.choice(jr.fold_in(key, j), n, (B,), replace=True)
        upd, st = opt.update(problem.batch_grad(theta, idx), st, theta)
        return optax.apply_updates(theta, upd), st

    def loop():
        out = []
        for i in range(k):
            theta, st = problem.theta0, opt.init(problem.theta0)
            for j in range(steps):
                theta, st = step(theta, st, keys[i], j)
            out.append(theta)
        return jnp.stack(out)

    return {"vmap": lambda: vm(keys), "lax.map": lambda: lm(keys), "python loop": loop}


def run_case(name, problem, k, steps, small_k, small_steps, repeats, rows):
    ours = lambda: so.simulate(so.SGD(problem, LR, B), problem.theta0, key=jr.key(2), n_paths=k,  # noqa: E731
                               n_steps=steps, save_every=steps).ys
    t_ours = _best(ours, repeats) / (k * steps)
    print(f"{name}: d = {problem.dim:,}, N = {problem.n_examples}; ours {t_ours:.4f} s per network-step "
          f"(K = {k}, {steps} steps)", flush=True)
    rows.append((name, "ours (so.simulate)", k, steps, t_ours, 1.0))
    for method, f in hand_written(problem, small_k, small_steps).items():
        t = _best(f, repeats) / (small_k * small_steps)
        print(f"  {method:>12}: {t:.4f} s per network-step (K = {small_k}, {small_steps} steps) = {t / t_ours:.1f}x ours",
              flush=True)
        rows.append((name, method, small_k, small_steps, t, t / t_ours))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true")
    p.add_argument("--n-examples", type=int, default=512)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--small-k", type=int, default=4, help="networks for the CNN's slow alternatives")
    p.add_argument("--small-steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--markdown", default=None)
    a = p.parse_args()
    if a.fast:
        a.n_examples, a.k, a.steps, a.small_k, a.small_steps, a.repeats = 128, 2, 2, 2, 2, 1
    rows = []
    run_case("MLP (digits)", mlp_problem(512), a.k, a.steps, a.k, a.steps, a.repeats, rows)
    run_case("CNN", cnn_problem(a.n_examples), a.k, a.steps, a.small_k, a.small_steps, a.repeats, rows)
    head = (f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, load "
            f"{os.getloadavg()[0]:.1f}, {datetime.date.today()}")
    table = ["| model | method | K | steps | s per network-step | × ours |", "|---|---|---|---|---|---|"]
    table += [f"| {m} | {meth} | {k} | {s} | {t:.4g} | {r:.2f} |" for m, meth, k, s, t, r in rows]
    print(head)
    print("\n".join(table))
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(head + "\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
