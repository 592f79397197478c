"""Early stopping in first_exit: every path exits within 10% of the horizon, so stopping
when the last one has left should save most of the work.

Runs, in one process, ``so.first_exit`` with ``early_stop=True`` and with
``early_stop=False`` (the same kernel stepping to the horizon), on the same paths, and
prints the times and their ratio. Usage: ``python benchmarks/bench_exit.py [--fast]``.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import jax.random as jr

import sde_opt as so


def best_of(fn, repeats):
    fn()  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n_paths, d = (500, 2) if args.fast else (10_000, 10)
    # a steep quadratic bowl with strong noise: every path leaves the unit ball quickly
    prob = so.landscapes.quadratic(jnp.eye(d))
    dyn = so.SGDSDE(prob, lr=0.01, batch_size=1, noise=so.IsotropicNoise(100.0))
    region = so.Ball(jnp.zeros(d), 1.0)
    probe = so.first_exit(dyn, jnp.zeros(d), region, key=jr.key(0), n_paths=n_paths, max_steps=100_000)
    last = int(round(float(jnp.max(probe.times)) / 0.01))
    horizon = 10 * last  # all exits within 10% of the horizon
    run = lambda early: so.first_exit(dyn, jnp.zeros(d), region, key=jr.key(0), n_paths=n_paths,
                                      max_steps=horizon, early_stop=early).times
    t_early = best_of(lambda: run(True), args.repeats)
    t_full = best_of(lambda: run(False), args.repeats)
    ex = so.first_exit(dyn, jnp.zeros(d), region, key=jr.key(0), n_paths=n_paths, max_steps=horizon)
    print(f"paths={n_paths} d={d} horizon={horizon} steps, last exit at step {last}, all exited: {bool(ex.exited.all())}")
    print(f"early stop   {t_early * 1e3:9.1f} ms")
    print(f"to horizon   {t_full * 1e3:9.1f} ms")
    print(f"ratio (to horizon / early stop) = {t_full / t_early:.1f}x")


if __name__ == "__main__":
    main()
