"""Figure: gradient descent on f(x) = x + sin x from x0 = 2.5 at lr = 1, 0.1, 0.01 against
the gradient flow dx/dt = −(1 + cos x), on the SDE time axis t = k·lr.

GD is the explicit Euler method of the flow: its global error is O(lr) (panel b), and all
three runs end at the degenerate stationary point −π (f' = f'' = 0), which the flow only
reaches algebraically, x + π ≈ 2/t (panel c).

    python paper_figs/xsin_lr.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import numpy as np

import _common
import sde_opt as so
from sde_opt.experiments import gd_against_flow

NAME = "xsin_lr"
FULL = {"x0": 2.5, "lrs": [1.0, 0.1, 0.01], "t1": 40.0}
FAST = {"x0": 2.5, "lrs": [1.0, 0.1, 0.01], "t1": 10.0}


def compute(config: dict, key) -> so.experiments.GDAgainstFlow:
    del key  # deterministic
    return gd_against_flow(so.landscapes.x_plus_sin(), [config["x0"]], config["lrs"], config["t1"])


def plot(runs: so.experiments.GDAgainstFlow, meta: dict):
    import matplotlib.pyplot as plt

    lrs = runs.lrs
    colors = ["C3", "C1", "C0"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), constrained_layout=True)
    ax = axes[0]
    ax.plot(runs.flow_t, runs.flow_x[:, 0], "k-", lw=2.5, alpha=0.35, label="gradient flow (Tsit5)")
    for i, lr in enumerate(lrs):
        t, x = runs.ts[i], runs.xs[i][:, 0]
        style = dict(marker="o", ms=4, lw=1) if lr >= 0.5 else dict(lw=1.2)
        ax.plot(t, x, color=colors[i % 3], label=f"GD, lr = {lr:g}", **style)
    t_max = min(12.0, runs.flow_t[-1])
    ax.axhline(-np.pi, color="0.5", ls=":", lw=1)
    ax.text(0.3, -np.pi, "−π: f' = f'' = 0", ha="left", va="bottom", fontsize=8, color="0.35")
    ax.set_xlim(0, t_max)
    ax.set_xlabel("time t = k · lr")
    ax.set_ylabel("x")
    ax.set_title("(a) iterates against the flow", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1]
    for i, lr in enumerate(lrs):
        t, err = runs.ts[i][1:], np.abs(runs.xs[i][1:, 0] - runs.flow_at[i][1:, 0])
        ax.plot(t, err, color=colors[i % 3], lw=1.2, label=f"lr = {lr:g}: max {err.max():.2g}")
    ax.set_yscale("log")
    ax.set_xlabel("time t = k · lr")
    ax.set_ylabel("|x_GD(t) − x_flow(t)|")
    ax.set_title("(b) global error of explicit Euler: O(lr)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.25)

    ax = axes[2]
    keep = runs.flow_t >= 1.0
    tf, ef = runs.flow_t[keep], runs.flow_x[keep, 0] + np.pi
    ax.loglog(tf, ef, "k-", lw=2.5, alpha=0.35, label="gradient flow")
    for i, lr in enumerate(lrs):
        t, e = runs.ts[i], runs.xs[i][:, 0] + np.pi
        ok = (e > 0) & (t >= 1.0)
        ax.loglog(t[ok], e[ok], color=colors[i % 3], lw=1.2, label=f"GD, lr = {lr:g}")
    ax.loglog(tf[tf > 2], 2.0 / tf[tf > 2], "k--", lw=1, label="2 / t")
    ax.set_xlabel("time t = k · lr")
    ax.set_ylabel("x + π")
    ax.set_title("(c) algebraic creep into the degenerate point", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.25)
    cfg = meta["config"]
    fig.suptitle(f"f(x) = x + sin x, x0 = {cfg['x0']}: gradient descent is explicit Euler for dx/dt = −f'(x)",
                 fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
