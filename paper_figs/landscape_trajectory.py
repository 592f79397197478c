"""Figure: the digits MLP's loss landscape on the plane of its SGD trajectory (Li et al.
2018, §7), with the trajectory projected on it and the density of an ensemble of SGD paths
from the same start, over the contours.

The plane goes through the final point θ_T along the top two PCA directions of
``θ_t − θ_T``; the trajectory is projected by least squares, and the figure states how far
it lies from the plane (relative residual) and how well the slice's losses match the true
losses along the path. The ensemble (same start, independent mini-batches) is projected on
the same plane at two times, each over a slice zoomed on the ensemble's own spread.

    python paper_figs/landscape_trajectory.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import _common
import sde_opt as so

NAME = "landscape_trajectory"
FULL = dict(hidden=32, n_examples=512, lr=0.2, batch=32, n_steps=600, save_every=10, grid=41, n_paths=256,
            margin=0.25)
FAST = dict(hidden=8, n_examples=128, lr=0.2, batch=16, n_steps=60, save_every=10, grid=7, n_paths=16,
            margin=0.25)


def _axis(lo, hi, margin, n):
    span = max(hi - lo, 1e-6)
    return jnp.linspace(lo - margin * span, hi + margin * span, n)


def compute(config: dict, key):
    k_prob, k_sgd, k_ens = jr.split(key, 3)
    prob = so.problems.mlp_digits(key=k_prob, hidden=(config["hidden"],), n_examples=config["n_examples"])
    sgd = so.SGD(prob, config["lr"], config["batch"])
    run = dict(n_steps=config["n_steps"], save_every=config["save_every"])
    traj = so.simulate(sgd, prob.theta0, key=k_sgd, n_paths=1, **run).ys[0]
    pca = so.slices.pca_directions(traj, 2)
    first = so.slices.project_trajectory(prob, pca.center, pca.directions, traj)
    c = np.asarray(first.coords)
    grid = tuple(_axis(c[:, i].min(), c[:, i].max(), config["margin"], config["grid"]) for i in range(2))
    sl = so.slices.landscape_slice(prob, pca.center, pca.directions, grid=grid)
    ens = so.simulate(sgd, prob.theta0, key=k_ens, n_paths=config["n_paths"], **run)
    out = {"slice": sl, "projection": first, "explained_variance_ratio": pca.explained_variance_ratio}
    # the ensemble at two times, each on a slice zoomed on its own spread (±4 standard deviations of
    # the projected positions; the paths spread far less than the trajectory travels)
    for name, row in (("early", len(ens.ts) // 4), ("final", len(ens.ts) - 1)):
        pos = ens.ys[:, row]
        c = np.asarray((pos - pca.center) @ pca.directions.T)
        zoom = tuple(jnp.linspace(c[:, i].mean() - 4 * c[:, i].std(), c[:, i].mean() + 4 * c[:, i].std(),
                                  config["grid"]) for i in range(2))
        out[f"{name}_slice"] = so.slices.landscape_slice(prob, pca.center, pca.directions, grid=zoom)
        out[f"{name}_density"] = so.slices.path_density(pos, pca.center, pca.directions, grid=zoom,
                                                        bandwidth=float(np.mean(c.std(axis=0))) / 3)
        out[f"{name}_time"] = ens.ts[row]
    return out


def plot(result: dict, meta: dict):
    import matplotlib.pyplot as plt

    sl, proj = result["slice"], result["projection"]
    evr = np.asarray(result["explained_variance_ratio"])
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    so.plot.slice_contour(sl, axes[0], filled=True, projection=proj, log=True)
    axes[0].set_xlabel(f"PCA 1 ({evr[0]:.0%} of the path)")
    axes[0].set_ylabel(f"PCA 2 ({evr[1]:.0%})")
    steps = np.arange(len(np.asarray(proj.loss))) * meta["config"]["save_every"]
    ax = axes[1]
    ax.semilogy(steps, np.asarray(proj.loss), label="true loss")
    ax.semilogy(steps, np.asarray(proj.loss_projected), "--", label="slice at the projected point")
    ax2 = ax.twinx()
    ax2.plot(steps, np.asarray(proj.relative_residual), color="C2", lw=0.8)
    ax2.set_ylabel("relative distance from the plane", color="C2")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    for name, ax in zip(("early", "final"), axes[2:]):
        dens = result[f"{name}_density"]
        so.plot.slice_density(dens, result[f"{name}_slice"], ax)
        ax.set_title(f"{meta['config']['n_paths']} SGD paths at t = {float(result[name + '_time']):.3g}: "
                     f"mean relative distance from the plane {float(dens.mean_relative_residual[0]):.2f}", fontsize=8)
    print(f"explained variance {evr.round(3)}; max relative residual {float(np.max(proj.relative_residual)):.3f}; "
          f"|loss - slice loss| along the path max {float(np.max(np.abs(proj.loss - proj.loss_projected))):.3g}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
