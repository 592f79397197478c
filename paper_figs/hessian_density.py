"""Figure: the Hessian spectral density of the digits MLP at initialisation and after training,
by stochastic Lanczos quadrature (Gaussian-quadrature nodes and weights, smoothed), with the top
eigenvalues from Lanczos marked: a bulk near zero and a few outliers (Ghorbani et al. 2019;
Papyan 2019), next to the density of the noise covariance D.

    python paper_figs/hessian_density.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import _common
import jax.random as jr
import numpy as np
import optax

import sde_opt as so

NAME = "hessian_density"
FULL = dict(hidden=32, n_examples=1024, lr=0.5, batch_size=32, n_steps=6000, n_probes=16, n_iter=100, k=12)
FAST = dict(hidden=8, n_examples=128, lr=0.5, batch_size=16, n_steps=300, n_probes=3, n_iter=30, k=5)


def compute(config: dict, key) -> dict:
    k_prob, k_train, k_init, k_end, k_eig = jr.split(key, 5)
    prob = so.problems.mlp_digits(key=k_prob, hidden=(config["hidden"],), n_examples=config["n_examples"])
    hist = so.curvature.track(prob, optax.sgd(config["lr"]), prob.theta0, key=k_train, n_steps=config["n_steps"],
                    every=config["n_steps"], batch_size=config["batch_size"], k=1, n_probes=2)
    out = {"dim": int(prob.theta0.shape[0]), "loss": np.asarray(hist.loss)}
    for stage, theta, k in (("init", prob.theta0, k_init), ("trained", hist.final, k_end)):
        kh, kd = jr.split(k)
        dens = so.curvature.hessian_density(prob, theta, key=kh, n_probes=config["n_probes"], n_iter=config["n_iter"])
        top, _ = so.hessian_eigs(prob, theta, config["k"], key=k_eig)
        noise = so.curvature.spectral_density(so.curvature.noise_operator(prob, theta), key=kd, n_probes=config["n_probes"],
                                    n_iter=config["n_iter"])
        out[stage] = {"hessian": dens, "noise": noise, "top": top}
        print(f"  {stage}: λmax {float(top[0]):.4g}, Tr H ≈ {float(dens.moment(1)) * out['dim']:.4g}", flush=True)
    return out


def plot(data: dict, meta: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4), constrained_layout=True)
    for ax, stage in zip(axes, ("init", "trained")):
        spectra = data[stage]
        so.plot.spectral_density(spectra["hessian"], ax, outliers=spectra["top"], label="Hessian H", color="C0")
        so.plot.spectral_density(spectra["noise"], ax, label="noise D", color="C1", alpha=0.8)
        ax.set_title(f"{stage} (loss {data['loss'][0 if stage == 'init' else -1]:.3g}); dotted: top "
                     f"{len(spectra['top'])} of H", fontsize=9)
        ax.legend(fontsize=8)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST, dpi=150)
