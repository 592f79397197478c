"""The sharp/flat toy of Zhu et al. (2019): which noise shape carries SGD out of a sharp minimum?

Paths start in the sharp minimum of a 2-D landscape (curvatures 8 and 2, rotated 30°) with a
flat neighbour (curvatures 1, 1) behind a barrier of 1. Five noises of equal total variance
Tr D = Tr H: isotropic, the diagonal of H, H itself, H's top eigenvector, and the genuine
mini-batch covariance of a finite-sum version of the landscape. The fraction of paths that
reach the flat side within the horizon, with ±2 binomial SEs.
"""

import jax
import jax.numpy as jnp
import numpy as np

import sde_opt as so
from _common import run_figure

NAME = "sharp_to_flat"


def compute(cfg, key):
    res = so.experiments.sharp_to_flat(key=key, lr=cfg["lr"], n_steps=cfg["n_steps"], n_paths=cfg["n_paths"])
    print(res.table())
    return res


def plot(res, meta):
    import matplotlib.pyplot as plt

    cfg = meta["config"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.3]})
    prob = so.experiments.default_sharp_flat()
    g = np.linspace(-1.1, 1.1, 200)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.stack([xx.ravel(), yy.ravel()], axis=1)
    zz = np.asarray(jax.vmap(prob.loss)(pts)).reshape(xx.shape)
    axes[0].contourf(xx, yy, np.minimum(zz, 3.0), levels=30, cmap="viridis")
    m = np.asarray(prob.info["minima"])
    axes[0].plot(m[:, 0], m[:, 1], "w*", ms=12)
    axes[0].set_title("landscape (sharp minimum left, flat right)", fontsize=9)
    axes[0].set_aspect("equal")
    so.plot.sharp_to_flat(res, axes[1])
    axes[1].set_title(f"escaped within {cfg['n_steps']} steps (lr {cfg['lr']}), equal Tr D", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run_figure(NAME, __doc__.splitlines()[0], compute, plot,
               full=dict(lr=0.05, n_steps=1000, n_paths=4000),
               fast=dict(lr=0.05, n_steps=300, n_paths=200))
