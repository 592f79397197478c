"""Figure: a sharp and a flat minimum of the digits MLP side by side, at the same scale
(Li et al. 2018, §5; Keskar et al. 2017): filter-normalised 2-D slices around a minimum
found by full-batch GD with a small step and one found by small-batch SGD with a large
step, on the same grid and colour scale, with the top Hessian eigenvalue of each, and the
loss along the segment between them with its barrier.

Filter normalisation (each filter of a random direction rescaled to the norm of the
corresponding filter of θ; biases zero) makes the two slices comparable although the two
minima have different weight norms.

    python paper_figs/sharp_flat_minima.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import _common
import sde_opt as so

NAME = "sharp_flat_minima"
FULL = dict(hidden=32, n_examples=512, gd_lr=0.05, sgd_lr=0.5, batch=8, n_steps=3000, grid=31, extent=1.0,
            n_points=61)
FAST = dict(hidden=8, n_examples=128, gd_lr=0.05, sgd_lr=0.5, batch=8, n_steps=100, grid=7, extent=1.0,
            n_points=9)


def compute(config: dict, key):
    k_prob, k_sgd, k_dir, k_eig = jr.split(key, 4)
    prob = so.problems.mlp_digits(key=k_prob, hidden=(config["hidden"],), n_examples=config["n_examples"])
    n = config["n_steps"]
    gd = so.simulate(so.GD(prob, config["gd_lr"]), prob.theta0, key=k_sgd, n_paths=1, n_steps=n, save_every=n)
    sgd = so.simulate(so.SGD(prob, config["sgd_lr"], config["batch"]), prob.theta0, key=k_sgd, n_paths=1,
                      n_steps=n, save_every=n)
    minima = {"sharp": gd.final[0], "flat": sgd.final[0]}
    grid = (jnp.linspace(-config["extent"], config["extent"], config["grid"]),) * 2
    out = {}
    for name, theta in minima.items():
        dirs = so.slices.random_directions(prob, theta, 2, key=k_dir)
        out[f"{name}_slice"] = so.slices.landscape_slice(prob, theta, dirs, grid=grid)
        out[f"{name}_lambda_max"] = so.hessian_eigs(prob, theta, 1, key=k_eig)[0][0]
        out[f"{name}_loss"] = prob.loss(theta)
    out["interpolation"] = so.slices.interpolation(prob, minima["sharp"], minima["flat"], n_points=config["n_points"])
    return out


def plot(result: dict, meta: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    slices = [result["sharp_slice"], result["flat_slice"]]
    hi = float(max(np.max(np.asarray(s.losses)) for s in slices))
    lo = float(min(np.min(np.asarray(s.losses)) for s in slices))
    levels = np.linspace(lo, hi, 25)  # one colour scale for both
    for ax, s, name in zip(axes, slices, ("sharp", "flat")):
        so.plot.slice_contour(s, ax, filled=True, levels=levels)
        lam, loss = float(result[f"{name}_lambda_max"]), float(result[f"{name}_loss"])
        ax.set_title(f"{name} minimum: λ_max = {lam:.3g}, loss {loss:.3g}", fontsize=9)
        ax.set_xlabel("filter-normalised direction 1")
        ax.set_ylabel("filter-normalised direction 2")
    so.plot.interpolation(result["interpolation"], axes[2])
    axes[2].set_xlabel("α  (sharp → flat)")
    print(f"lambda_max sharp {float(result['sharp_lambda_max']):.4g}, flat {float(result['flat_lambda_max']):.4g}; "
          f"barrier {float(result['interpolation'].barrier):.4g}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
