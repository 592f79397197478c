"""Figure: SVAG (Li, Malladi & Arora 2021; Malladi et al. 2022) reaches the SDE limit with real
mini-batches as the variance amplification ℓ grows.

Least squares on 64 Gaussian examples (d = 2), batch size 2, from θ = 0.

(a) SGD at lr = 0.4 (ℓ = 1) and SVAG with ℓ = 2, 4, 8, 16 (step lr/ℓ, two batches combined
    so that the gradient noise is ℓ times larger): excess loss E L(θ_t) − L(θ*) against
    t = k·lr/ℓ, with the SDE dθ = −∇L dt + √(lr/B · D(θ)) dW. SGD settles about 60% above
    the SDE's excess loss (discretisation, and the multiplicative mini-batch noise of least
    squares); SVAG closes the gap like 1/ℓ.
(b) RMSprop (lr = 0.2, β = 1 − 4 lr², v₀ = 1) and its SVAG (square-root rule at κ = 1/ℓ),
    against the RMSprop SDE of Malladi et al., t = k·lr²/ℓ.
(c) |E L_SVAG(t₁) − E L_SDE(t₁)| against ℓ with 1/ℓ for reference (error bars: 2 SE).

    python paper_figs/svag_convergence.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import _common
import sde_opt as so

NAME = "svag_convergence"
FULL = {"ells": [1, 2, 4, 8, 16], "n_paths": 10_000, "t_sgd": 4.0, "t_rms": 0.8, "lr_sgd": 0.4, "lr_rms": 0.2,
        "n_saves": 10}
FAST = {"ells": [1, 2, 4], "n_paths": 1_000, "t_sgd": 4.0, "t_rms": 0.8, "lr_sgd": 0.4, "lr_rms": 0.2, "n_saves": 10}


def _problem():
    return so.problems.linear_regression(key=jr.key(0), n_examples=64, dim=2, noise_std=1.0)


def compute(config: dict, key) -> dict:
    prob = _problem()
    y0 = jnp.zeros(2)
    ells, n, ns = config["ells"], config["n_paths"], config["n_saves"]
    lr = config["lr_sgd"]
    sgd = so.experiments.svag_study(lambda ell: so.optimizers.SVAG(prob, lr, 2, ell), ells, so.optimizers.SVAG(prob, lr, 2, 1).limit(), y0,
                        key=jr.fold_in(key, 0), n_paths=n, t1=config["t_sgd"], n_saves=ns, limit_refine=4)
    lr = config["lr_rms"]
    decay = 1.0 - 4.0 * lr**2
    rms = so.experiments.svag_study(lambda ell: so.optimizers.svag_rmsprop(prob, lr, 2, ell, decay=decay, initial_scale=1.0), ells,
                        so.optimizers.svag_limit_rmsprop(prob, lr, 2, decay, initial_scale=1.0), y0, key=jr.fold_in(key, 1),
                        n_paths=n, t1=config["t_rms"], n_saves=ns, limit_refine=4)
    return {"lstar": float(prob.loss(prob.info["minima"][0])), "sgd": sgd, "rms": rms}


def plot(data: dict, meta: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), constrained_layout=True)
    ells = data["sgd"].ells
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(ells)))
    titles = {"sgd": "(a) SGD-SVAG, lr = {lr:g}, B = 2", "rms": "(b) RMSprop-SVAG, lr = {lr:g}, B = 2"}
    cfg = meta["config"]
    for ax, tag, lr, unit in ((axes[0], "sgd", cfg["lr_sgd"], "k·lr/ℓ"), (axes[1], "rms", cfg["lr_rms"], "k·lr²/ℓ")):
        res, lstar = data[tag], data["lstar"]
        ts = res.ts
        for i, ell in enumerate(ells):
            m, s = res.mean[i] - lstar, res.se[i]
            ax.plot(ts, m, color=colors[i], lw=1.3, label=f"ℓ = {ell:g}" + (" (the optimizer)" if ell == 1 else ""))
            ax.fill_between(ts, m - 2 * s, m + 2 * s, color=colors[i], alpha=0.2, lw=0)
        ax.plot(ts, res.limit_mean - lstar, "k--", lw=1.5, label="SDE limit")
        ax.set_yscale("log")
        ax.set_xlabel(f"time t = {unit}")
        ax.set_ylabel("E L(θ_t) − L(θ*)")
        ax.set_title(titles[tag].format(lr=lr), fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    for tag, marker, label in (("sgd", "o", "SGD"), ("rms", "s", "RMSprop")):
        diff, se = np.abs(data[tag].diff), data[tag].diff_se
        ax.errorbar(ells, diff, yerr=2 * se, marker=marker, capsize=3, lw=1.2,
                    label=f"{label}: slope {data[tag].slope:.2f}")
        ax.plot(ells, diff[0] / np.asarray(ells), ls=":", color="0.5")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("amplification ℓ")
    ax.set_ylabel("|E L_SVAG − E L_SDE| at the end")
    ax.set_title("(c) distance to the SDE ∝ 1/ℓ (dotted)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.25)
    fig.suptitle(f"SVAG converges to the SDE with real mini-batches ({cfg['n_paths']} paths per curve)", fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
