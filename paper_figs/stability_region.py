"""Figure: where SGD is stable at a minimum. The mean-square stability region in (lr, B) of
least squares (per-example quadratics, with and without replacement) against the Monte
Carlo divergence boundary of real SGD; and the growth rate of E‖θ_k − θ*‖² against lr.

(a) lr*(B) from the second-moment operator T (exact) for both sampling schemes, the GD
bound 2/λmax, and the boundary measured from real SGD (tangent walkers with resampling).
(b) the per-step growth rate at B = 1: log ρ(T), the resampled Monte Carlo estimate, the
naive average of ‖e_k‖² over independent SGD paths (dominated by rare paths: it reads as
stable well past the boundary) and the median path (the almost-sure rate).
(c) Monte Carlo / formula per batch size, with the ±2% band.

    python paper_figs/stability_region.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import _common
import sde_opt as so

NAME = "stability_region"
FULL = {"n_examples": 32, "dim": 4, "mc_batch_sizes": [1, 2, 4, 8, 16], "n_walkers": 2000, "n_steps": 400,
        "burn_in": 100, "n_bisect": 12, "curve_points": 13, "n_paths": 20000, "path_steps": 200}
FAST = {"n_examples": 16, "dim": 3, "mc_batch_sizes": [1, 4], "n_walkers": 200, "n_steps": 100, "burn_in": 25,
        "n_bisect": 5, "curve_points": 4, "n_paths": 500, "path_steps": 40}


def compute(config: dict, key) -> dict:
    k_prob, k_mc, k_curve, k_path = jr.split(key, 4)
    # interpolating least squares (y = X θ*): SGD is exactly the random linear map e ← (I − lr H_B) e
    prob = so.problems.linear_regression(key=k_prob, n_examples=config["n_examples"], dim=config["dim"],
                                         noise_std=0.0)
    th = prob.info["minima"][0]
    ms = so.stability.MeanSquareStability.from_problem(prob, th)
    out: dict = {"gd_max_lr": float(ms.gd_max_lr)}
    for tag, rep in (("rep", True), ("norep", False)):
        reg = ms.region(replacement=rep)
        mc_batch, boundaries = [], []
        for j, b in enumerate(config["mc_batch_sizes"]):
            if not rep and b == prob.n_examples:
                continue
            mc = so.stability.divergence_boundary(so.SGD(prob, 0.1, b, replacement=rep), th, key=jr.fold_in(k_mc, 2 * j + rep),
                                        n_walkers=config["n_walkers"], n_steps=config["n_steps"],
                                        burn_in=config["burn_in"], n_bisect=config["n_bisect"])
            mc_batch.append(b), boundaries.append(mc)
            print(f"  B={b:<3} replacement={rep!s:<5} MC lr*={mc.lr:.5f} [{mc.low:.5f}, {mc.high:.5f}]  "
                  f"formula {ms.max_lr(b, rep):.5f}", flush=True)
        # the formula's region and the Monte Carlo boundary of real SGD at each batch size
        out[tag] = {"region": reg, "mc_batch": np.asarray(mc_batch, dtype=int), "boundaries": tuple(boundaries)}
    # growth rate of E‖e‖² against lr at B = 1
    star = ms.max_lr(1)
    lrs = np.linspace(0.6, 1.3, config["curve_points"]) * star
    formula = np.array([math.log(ms.spectral_radius(lr, 1)) for lr in lrs])
    growth, naive, median = [], [], []
    n, steps = config["n_paths"], config["path_steps"]
    u0 = jr.normal(jr.fold_in(k_path, 1), (n, prob.dim if prob.dim else config["dim"]))
    u0 = u0 / jnp.linalg.norm(u0, axis=1, keepdims=True)
    k1 = steps // 4
    for i, lr in enumerate(lrs):
        g = so.stability.moment_growth_rate(so.SGD(prob, lr, 1), th, key=jr.fold_in(k_curve, i), n_walkers=config["n_walkers"],
                                  n_steps=config["n_steps"], burn_in=config["burn_in"])
        growth.append(g)
        ens = so.simulate(so.SGD(prob, lr, 1), th + u0, key=jr.fold_in(k_path, i), n_paths=n, n_steps=steps,
                          save_every=k1)
        e2 = np.asarray(jnp.sum((ens.ys - th) ** 2, axis=-1), dtype=np.float64)  # (n, S)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            naive.append(np.log(np.mean(e2[:, -1]) / np.mean(e2[:, 1])) / (steps - k1))
            median.append(np.median(np.log(e2[:, -1] / e2[:, 1])) / (steps - k1))
    out["curve"] = {"lr": lrs, "star": float(star), "formula": formula, "growth": tuple(growth),
                    "naive": np.asarray(naive), "median": np.asarray(median)}
    return out


def plot(data: dict, meta: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    ax = axes[0]
    mc = {tag: {f: np.array([getattr(b, f) for b in data[tag]["boundaries"]]) for f in ("lr", "low", "high")}
          for tag in ("rep", "norep")}
    for tag, color, label in (("rep", "C0", "with replacement"), ("norep", "C3", "without replacement")):
        reg = data[tag]["region"]
        ax.plot(reg.batch_sizes, reg.max_lr, "-", color=color, lw=1.8, label=f"formula, {label}")
        mb, lr = data[tag]["mc_batch"], mc[tag]["lr"]
        err = np.stack([lr - mc[tag]["low"], mc[tag]["high"] - lr])
        ax.errorbar(mb, lr, yerr=err, fmt="o", color=color, ms=5, capsize=3, label=f"real SGD (MC), {label}")
    ax.axhline(data["gd_max_lr"], color="k", ls="--", lw=1, label="GD: 2/λmax")
    ax.fill_between(data["rep"]["region"].batch_sizes, 0, data["rep"]["region"].max_lr, color="C0", alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("largest mean-square stable lr")
    ax.set_title("(a) stability region in (lr, B)", fontsize=10)
    ax.set_ylim(0, 1.15 * data["gd_max_lr"])
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    curve = data["curve"]
    lr = curve["lr"] / curve["star"]
    ax.plot(lr, curve["formula"], "k-", lw=1.8, label="log ρ(T) (formula)")
    ax.errorbar(lr, [g.rate for g in curve["growth"]], yerr=2 * np.array([g.stderr for g in curve["growth"]]), fmt="o",
                color="C2", ms=4, capsize=2, label="real SGD, resampled walkers (±2 s.e.)")
    ax.plot(lr, curve["naive"], "s--", color="C1", ms=4, lw=1, label="mean of ‖e‖² over independent paths")
    ax.plot(lr, curve["median"], "^:", color="C4", ms=4, lw=1, label="median path (a.s. rate)")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.axvline(1, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("lr / lr*  (B = 1)")
    ax.set_ylabel("growth rate of E‖θ_k − θ*‖² per step")
    ax.set_title("(b) heavy tails hide the mean-square growth", fontsize=10)
    ax.legend(fontsize=7)

    ax = axes[2]
    for tag, color, off in (("rep", "C0", 0.97), ("norep", "C3", 1.03)):
        mb, reg = data[tag]["mc_batch"], data[tag]["region"]
        if len(mb) == 0:
            continue
        want = np.interp(mb, reg.batch_sizes, reg.max_lr)
        ratio = mc[tag]["lr"] / want
        err = np.stack([mc[tag]["lr"] - mc[tag]["low"], mc[tag]["high"] - mc[tag]["lr"]])
        ax.errorbar(mb * off, ratio, yerr=err / want, fmt="o", color=color, capsize=3,
                    label="with replacement" if tag == "rep" else "without replacement")
    ax.axhspan(0.98, 1.02, color="0.85", alpha=0.6, label="±2%")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ticks = np.unique(np.concatenate([data["rep"]["mc_batch"], data["norep"]["mc_batch"]]))
    ax.set_xticks(ticks, [str(int(t)) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("batch size B")
    ax.set_ylabel("MC boundary / formula")
    ax.set_title("(c) Monte Carlo against the mean-square formula", fontsize=10)
    ax.legend(fontsize=7)
    cfg = meta["config"]
    fig.suptitle(f"Mean-square stability of SGD at the minimum of least squares "
                 f"(N = {cfg['n_examples']}, d = {cfg['dim']}, interpolating)", fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
