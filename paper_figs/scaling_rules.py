"""Figure: where the scaling rules hold as the batch grows.

(a) Closed form (``so.optimizers.linear_rule_quadratic``): SGD on a quadratic with Hessian eigenvalues
    1 and 10 and noise D = H, scaled by the linear rule (lr → κ·lr, B → κB) from
    B = 1 at three base learning rates. The SDE's stationary loss is the same for every κ;
    SGD's grows like 1/(2 − κ·lr·λ) and diverges at κ* = 2/(lr·λ_max) (dotted lines).
(b) Real mini-batch SGD on least squares (N = 128, d = 2) under the linear rule from
    lr = 0.05, B = 2 (``so.experiments.linear_rule_breakdown``): E L at a fixed time against the
    batch size, with the SDE prediction every κ shares; the rule fails as κ·lr nears
    2/λ_max.
(c) Adam with real batches on the same problem, run to the same Adam-SDE time Σ lr²: the
    square-root rule (lr ×√κ, 1 − β ×κ; Malladi et al. 2022) against scaling the step
    linearly (lr ×κ, the rest as the square-root rule).

    python paper_figs/scaling_rules.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import _common
import sde_opt as so

NAME = "scaling_rules"
FULL = {"sgd_kappas": [1, 2, 4, 8, 16, 24, 32], "adam_kappas": [1, 2, 4, 8, 16, 32], "n_paths": 4000,
        "t_sgd": 4.8, "t_adam": 0.64}
FAST = {"sgd_kappas": [1, 16, 24], "adam_kappas": [1, 8], "n_paths": 400, "t_sgd": 4.8, "t_adam": 0.64}
BASE_LRS = [0.01, 0.02, 0.05]


def _problem():
    return so.problems.linear_regression(key=jr.key(0), n_examples=128, dim=2, noise_std=1.0)


def compute(config: dict, key) -> dict:
    kq = np.geomspace(1, 40, 60)
    hess = jnp.diag(jnp.array([1.0, 10.0]))
    out = {"quadratic": tuple(so.optimizers.linear_rule_quadratic(hess, lr, 1, kq) for lr in BASE_LRS), "adam": {}}

    prob = _problem()
    y0 = jnp.zeros(2)
    out["sgd"] = so.experiments.linear_rule_breakdown(prob, 0.05, 2, config["sgd_kappas"], y0, key=jr.fold_in(key, 0),
                                                      n_paths=config["n_paths"], t1=config["t_sgd"])

    base = dict(lr=0.02, batch_size=2, b1=0.98, b2=0.99, dt=0.02**2)

    def make(hp):
        return so.OptaxDynamics(prob, so.optimizers.adam_moments(hp["lr"], hp["b1"], hp["b2"]), hp["batch_size"], lr=hp["dt"])

    def sqrt_rule(k, **hp):
        return {**so.optimizers.sqrt_scaling_rule(k, **hp), "dt": k * hp["dt"]}

    def linear_step(k, **hp):
        return {**sqrt_rule(k, **hp), "lr": k * hp["lr"]}

    for tag, rule in (("sqrt", sqrt_rule), ("linear", linear_step)):
        out["adam"][tag] = so.experiments.scaling_rule_sweep(make, rule, base, config["adam_kappas"], y0,
                                                             key=jr.fold_in(key, 1), n_paths=config["n_paths"],
                                                             t1=config["t_adam"])
    return out


def plot(data: dict, meta: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), constrained_layout=True)
    ax = axes[0]
    for res, lr in zip(data["quadratic"], BASE_LRS):
        (line,) = ax.plot(res.kappas, res.ratio, lw=1.5, label=f"base lr = {lr:g}")
        ax.axvline(res.kappa_max, color=line.get_color(), ls=":", lw=1)
    ax.axhline(1.0, color="k", lw=1, alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.9, 30)
    ax.set_xlabel("batch factor κ (lr → κ·lr, B → κB)")
    ax.set_ylabel("stationary E L: SGD / SDE")
    ax.set_title("(a) quadratic, D = H: linear rule, closed form", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1]
    sgd = data["sgd"]
    b = sgd.sweep.batch_size
    ax.errorbar(b, sgd.sweep.mean, yerr=2 * sgd.sweep.se, marker="o", capsize=3, label="SGD, linear rule")
    sde, sse = sgd.sde_mean, sgd.sde_se
    ax.axhspan(sde - 2 * sse, sde + 2 * sse, color="k", alpha=0.15)
    ax.axhline(sde, color="k", ls="--", lw=1, label="SDE (same for every κ)")
    bstar = sgd.kappa_max * b[0]
    ax.axvline(bstar, color="C3", ls=":", label=f"κ·lr = 2/λ_max (B = {bstar:.0f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B (lr = 0.025·B)")
    ax.set_ylabel("E L at the end")
    ax.set_title("(b) least squares: the linear rule breaks near 2/λ_max", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[2]
    for tag, label in (("sqrt", "square-root rule"), ("linear", "lr ×κ (linear)")):
        sweep = data["adam"][tag]
        ax.errorbar(sweep.batch_size, sweep.mean, yerr=2 * sweep.se, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("E L at the same Adam-SDE time")
    ax.set_title("(c) Adam: square-root rule vs linear step", fontsize=10)
    ax.legend(fontsize=8)
    cfg = meta["config"]
    fig.suptitle(f"Scaling rules against batch size ({cfg['n_paths']} paths per point; error bars 2 SE)", fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
