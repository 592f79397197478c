"""Headline figure: mean escape time against sharpness, SGD-shaped against isotropic noise.

A 1-D double well with its barrier fixed (ΔL = 0.25) and the curvature λ of its minima
varied. With Hessian-shaped noise D = H(θ*) = λ the SDE is Langevin dynamics at
T = lr λ/(2B), so log τ grows linearly in 1/λ (slope ≈ 2BΔL/lr); with isotropic noise of
fixed variance (equal trace at the geometric-mean λ) only Kramers' prefactor moves.
Monte Carlo (censored exponential fit, 95% exact interval) beside the exact quadrature,
Kramers and Xie et al. (2021).
"""

import jax.random as jr
import numpy as np

import sde_opt as so
from _common import run_figure

NAME = "escape_sharpness"


def compute(cfg, key):
    lam = np.geomspace(cfg["lam_min"], cfg["lam_max"], cfg["n_lam"])
    out = {}
    for i, kind in enumerate(("hessian", "isotropic")):
        st = so.escape_vs_sharpness(lam, noise=kind, barrier=cfg["barrier"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                                    key=jr.fold_in(key, i), n_paths=cfg["n_paths"], dt=cfg["dt"])
        print(st.table())
        for k, v in st.as_arrays().items():
            out[f"{kind}_{k}"] = v
    return out


def plot(data, meta, png):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    studies = []
    for kind in ("hessian", "isotropic"):
        st = {k[len(kind) + 1:]: v for k, v in data.items() if k.startswith(kind + "_")}
        st["noise"] = kind
        studies.append(st)
        s, se = so.fit_log_slope(1 / st["x"], st["mean_time"], st["mean_low"], st["mean_high"])
        print(f"[{NAME}] {kind}: slope of log tau in 1/lambda = {s:.2f} +- {se:.2f}")
    so.plot_escape_study(studies, ax)
    cfg = meta["config"]
    ax.set_xlabel("1 / sharpness λ")
    ax.set_title(f"Escape from a minimum of sharpness λ (barrier {cfg['barrier']}, lr {cfg['lr']}, B {cfg['batch_size']}, "
                 f"dt {cfg['dt'] or cfg['lr']})", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=130)


if __name__ == "__main__":
    base = dict(barrier=0.25, lr=0.1, batch_size=1, lam_min=1.0, lam_max=3.0)
    run_figure(NAME, __doc__.splitlines()[0], compute, plot,
               full=dict(base, n_lam=6, n_paths=2000, dt=0.025),
               fast=dict(base, n_lam=3, n_paths=200, dt=None))
