"""The runs compared between one process and several (tests/test_distributed.py): the
engine's entry points on elementwise dynamics, with chunks small enough that every process
runs several of them."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sde_opt as so


def run_cases(checkpoint_dir=None) -> dict:
    well = so.landscapes.double_well(barrier=0.25, curvature=2.0)
    sde = so.SGDSDE(well, lr=0.1, batch_size=1, noise=so.IsotropicNoise(2.0))
    start = well.info["minima"][0]
    kw = dict(n_paths=70, chunk_size=16)  # 5 chunks, the last one partial
    ens = so.simulate(sde, start, key=jr.key(0), n_steps=40, save_every=8, **kw)
    # key 4: the paths a padding chunk would hold (80-95) exit after every real one, so a
    # padding chunk that ran would show in steps_run
    ex = so.first_exit(sde, start, so.HalfSpace(jnp.array([1.0]), 0.0), key=jr.key(4), max_steps=3000,
                       checkpoint=checkpoint_dir, **kw)
    rad = so.stability_radius(sde, start, key=jr.key(2), delta=0.1, n_steps=50, **kw)
    sgd = so.SGD(so.problems.linear_regression(key=jr.key(3), n_examples=32, dim=2), lr=0.1, batch_size=4)
    run = so.simulate(sgd, jnp.zeros(2), key=jr.key(4), n_steps=20, save_every=5, **kw)
    return {
        "ys": np.asarray(ens.ys), "diverged": np.asarray(ens.diverged),
        "times": np.asarray(ex.times), "exited": np.asarray(ex.exited), "positions": np.asarray(ex.positions),
        "steps_run": np.asarray(ex.n_steps_run),
        "running_max": np.asarray(rad.running_max), "radius": np.asarray([rad.radius, rad.low, rad.high]),
        "sgd": np.asarray(run.ys),
    }
