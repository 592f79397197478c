"""Mean escape time against B/lr at fixed sharpness, Hessian-shaped against isotropic noise.

For D = H(θ*) the SDE temperature is lr λ/(2B), so log τ ≈ (2ΔL/λ)·(B/lr) + const; for
isotropic noise of variance v the slope is 2ΔL/v. Here v = λ, so both lines share the
same slope: at a single sharpness, B/lr alone cannot tell the noise shapes apart — only
the dependence on λ can (see escape_sharpness).
"""

import jax.random as jr
import numpy as np

import sde_opt as so
from _common import run_figure

NAME = "escape_batch"


def compute(cfg, key):
    ratios = np.asarray(cfg["b_over_lr"], float)
    st = so.experiments.escape_vs_batch(ratios, sharpness=cfg["sharpness"], barrier=cfg["barrier"], lr=cfg["lr"],
                            key=jr.fold_in(key, 0), n_paths=cfg["n_paths"], dt=cfg["dt"])
    print(st.table())
    return st


def plot(study, meta):
    cfg = meta["config"]
    ax = so.plot.escape_study(study, inverse=False)
    s, se = study.log_slope()
    pred = 2 * cfg["barrier"] / cfg["sharpness"]
    ax.set_xlabel("B / lr")
    ax.set_title(f"slope of log τ in B/lr: {s:.3f} ± {se:.3f} (exponent 2ΔL/λ = {pred:.3f})", fontsize=9)
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


if __name__ == "__main__":
    base = dict(sharpness=2.0, barrier=0.25, lr=0.2)
    run_figure(NAME, __doc__.splitlines()[0], compute, plot,
               full=dict(base, b_over_lr=[5, 10, 15, 20, 25, 30], n_paths=2000, dt=0.05),
               fast=dict(base, b_over_lr=[5, 10, 15], n_paths=200, dt=None))
