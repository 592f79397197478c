"""The run that tests/test_checkpoint.py kills and resumes: 16 chunks of a double-well SDE,
each a fraction of a second."""

import jax.numpy as jnp
import jax.random as jr

import sde_opt as so

N_PATHS, CHUNK = 2400, 150


def long_run(checkpoint=None, *, key=jr.key(7), lr=0.1):
    well = so.landscapes.double_well(barrier=0.25, curvature=2.0)
    sde = so.SGDSDE(well, lr=lr, batch_size=1, noise=so.IsotropicNoise(2.0))
    return so.simulate(sde, jnp.array([-1.0]), key=key, n_paths=N_PATHS, n_steps=20_000, save_every=1000,
                       chunk_size=CHUNK, checkpoint=checkpoint, progress=False)
