"""Figure: the edge of stability. Full-batch GD on a tanh MLP with squared loss on digits
drives its sharpness λmax up to 2/lr and hovers there; the gradient flow from the same start
(diffrax, Tsit5, adaptive) keeps sharpening, and GD leaves it when it reaches 2/lr;
mini-batch SGD at the same lr settles below 2/lr, the lower the smaller the batch.

(a) λmax · lr / 2 along GD for several lr (1 = the stability threshold 2/lr), with the
flow's λmax on the same time axis t = k · lr (dashed). (b) training loss of GD and the flow.
(c) GD's distance from the flow, relative to the distance the flow has travelled, with the
departure step (first time above 5%). (d) SGD at several batch sizes, lr fixed.

    python paper_figs/edge_of_stability.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import jax.random as jr
import numpy as np

import _common
import sde_opt as so

NAME = "edge_of_stability"
FULL = {"hidden": [32], "n_examples": 512, "lrs": [0.4, 0.5, 0.6], "n_steps": 6000, "every": 20,
        "sgd_lr": 0.5, "batch_sizes": [16, 64, 256], "flow_max_steps": 200_000}
FAST = {"hidden": [16], "n_examples": 128, "lrs": [0.5], "n_steps": 400, "every": 20,
        "sgd_lr": 0.5, "batch_sizes": [16], "flow_max_steps": 20_000}


def compute(config: dict, key) -> so.experiments.EdgeOfStability:
    k_prob, k_run = jr.split(key)
    prob = so.problems.mlp_digits(key=k_prob, hidden=tuple(config["hidden"]), loss="mse",
                                  n_examples=config["n_examples"])
    out = so.experiments.edge_of_stability(prob, prob.theta0, key=k_run, lrs=config["lrs"], n_steps=config["n_steps"],
                               every=config["every"], sgd_lr=config["sgd_lr"], batch_sizes=config["batch_sizes"],
                               flow_max_steps=config["flow_max_steps"])
    for i, lr in enumerate(config["lrs"]):
        print(f"  GD lr={lr}: sharpness/(2/lr) over the last half: median {out.gd_median_ratio[i]:.3f}, "
              f"{100 * out.gd_frac_within[i]:.0f}% of records within 10%; first within 10% at step "
              f"{out.gd_first_near[i]}; departs from the flow at step {out.flow[i].departure} "
              f"(sharpness apart by 5% at {out.flow[i].sharpness_departure})", flush=True)
    for j, b in enumerate(config["batch_sizes"]):
        print(f"  SGD lr={config['sgd_lr']} B={b}: median sharpness/(2/lr) over the last half "
              f"{out.sgd_median_ratio[j]:.3f}", flush=True)
    return out


def plot(out: so.experiments.EdgeOfStability, meta: dict):
    import matplotlib.pyplot as plt

    cfg = meta["config"]
    lrs = out.lrs
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.3), constrained_layout=True)
    for i, lr in enumerate(lrs):
        c = f"C{i}"
        gd, fl = out.gd[i], out.flow[i]
        steps = np.asarray(gd.steps)
        ok = fl.reached & np.isfinite(fl.sharpness)  # the flow stops where the adaptive solver ran out of steps
        axes[0].plot(steps, np.asarray(gd.sharpness) * lr / 2, color=c, lw=1.3, label=f"GD lr = {lr:g}")
        axes[0].plot(steps[ok], fl.sharpness[ok] * lr / 2, color=c, ls="--", lw=1.2,
                     label=f"gradient flow, t = k·{lr:g}")
        axes[1].plot(steps, np.asarray(gd.loss), color=c, lw=1.2, label=f"GD lr = {lr:g}")
        axes[1].plot(steps[ok], fl.loss[ok], color=c, ls="--", lw=1.2, label="flow")
        axes[2].plot(steps[ok], fl.rel_dist[ok], color=c, lw=1.2, label=f"lr = {lr:g}")
        dep = fl.departure
        if dep > 0:
            axes[2].axvline(dep, color=c, ls=":", lw=1)
            axes[0].axvline(dep, color=c, ls=":", lw=1)
    steps0 = np.asarray(out.gd[0].steps)
    half = steps0[len(steps0) // 2]
    axes[0].axhspan(0.9, 1.1, color="0.85", alpha=0.6, label="±10% of 2/lr")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].axvline(half, color="0.4", lw=0.8, ls="-.")
    axes[0].set_xlabel("step k")
    axes[0].set_ylabel("λmax · lr / 2")
    axes[0].set_title("(a) sharpness rises to 2/lr and stays (dotted: departure)", fontsize=10)
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step k")
    axes[1].set_ylabel("training loss (MSE)")
    axes[1].set_title("(b) GD at the edge: non-monotone but decreasing", fontsize=10)
    axes[1].legend(fontsize=7, ncol=2)
    axes[2].axhline(0.05, color="k", lw=0.8, ls="--")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step k")
    axes[2].set_ylabel("‖θ_GD(k) − φ(k·lr)‖ / ‖φ(k·lr) − θ₀‖")
    axes[2].set_title("(c) distance from the gradient flow", fontsize=10)
    axes[2].legend(fontsize=7)
    slr = out.sgd_lr
    for j, (b, hist) in enumerate(zip(out.batch_sizes, out.sgd)):
        axes[3].plot(np.asarray(hist.steps), np.asarray(hist.sharpness) * slr / 2, color=f"C{j + 4}", lw=1.2,
                     label=f"SGD B = {int(b)}: median {out.sgd_median_ratio[j]:.2f}")
    if slr in list(lrs):
        i = list(lrs).index(slr)
        axes[3].plot(np.asarray(out.gd[i].steps), np.asarray(out.gd[i].sharpness) * slr / 2, color="k", lw=1,
                     label="GD (full batch)")
    axes[3].axhline(1.0, color="k", lw=0.8)
    axes[3].set_xlabel("step k")
    axes[3].set_ylabel("λmax · lr / 2")
    axes[3].set_title(f"(d) SGD at lr = {slr:g} settles below 2/lr", fontsize=10)
    axes[3].legend(fontsize=7)
    fig.suptitle(f"Edge of stability: tanh MLP {cfg['hidden']} on {cfg['n_examples']} digits, squared loss, "
                 f"λmax by Lanczos every {cfg['every']} steps inside the jitted loop", fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
