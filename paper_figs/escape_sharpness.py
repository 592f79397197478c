"""Headline figure: mean escape time against sharpness, SGD-shaped against isotropic noise.

A 1-D double well with its barrier fixed (ΔL = 0.25) and the curvature λ of its minima
varied. With Hessian-shaped noise D = H(θ*) = λ the SDE is Langevin dynamics at
T = lr λ/(2B), so log τ grows linearly in 1/λ (slope ≈ 2BΔL/lr); with isotropic noise of
fixed variance (equal trace at the geometric-mean λ) only Kramers' prefactor moves.
Monte Carlo (censored exponential fit, 95% exact interval) beside the exact quadrature,
Kramers and Xie et al. (2021). ``make demo`` runs the same computation.
"""

import sde_opt as so
from _common import run_figure

NAME = "escape_sharpness"


def compute(cfg, key):
    return so.experiments.escape_headline({k: v for k, v in cfg.items() if k in so.experiments.HEADLINE}, key=key)


def plot(result, meta):
    ax = so.plot.escape_headline(result)
    ax.figure.set_size_inches(7, 4.8)
    ax.figure.tight_layout()
    return ax.figure


if __name__ == "__main__":
    full = dict(so.experiments.HEADLINE)
    run_figure(NAME, __doc__.splitlines()[0], compute, plot,
               full=full, fast=dict(full, n_lam=3, n_paths=200, dt=None))
