"""Figure: the large-batch generalization gap on digits, with injected noise of equal trace
(issue 13, parts 2 and 3 on a network).

A tanh MLP (64-32-10, d = 2,410) on a train/test split of scikit-learn's bundled digits
(512 train, 1,285 test images), 16 seeds per arm run as one ensemble on the engine, on the
clean task and with 20% of the training labels flipped (a harder task). Arms: SGD with b = 16,
full-batch GD at the same rate, GD with the linear rule (rate ×B/b, capped at 8 for
stability: 16 is asked for), and GD plus injected noise (``so.inject_noise``) of temperature
τ = 1/b and equal trace Tr D at the large-batch minima: isotropic, diagonal, empirical Fisher,
the mini-batch covariance D(θ), Hessian-shaped (Lanczos draws on a 128-example sub-sample);
a third run gives the shapes equal trace at the initial points instead; a fourth repeats the
label-noise task with a small CNN (3×3 convolution with 8 channels, tanh, 2×2 pooling, dense;
d = 1,370; 8 seeds and 1,000 steps, as its host-loop steps are slower on CPU).
Left: test accuracy (mean, 95% t-interval); middle: λmax against test accuracy per run;
right: fraction of paths whose training loss rises by 0.05 within 500 steps from a
large-batch minimum of the label-noise task (Wilson intervals).

    python paper_figs/large_batch_gap.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import jax.random as jr

import _common
import sde_opt as so

NAME = "large_batch_gap"
ARMS = so.experiments.LARGE_BATCH_ARMS
STUDY = ("n_seeds", "n_steps", "n_train", "lr", "small_batch", "lr_cap", "hessian_subsample")
FULL = dict(n_seeds=16, n_steps=2000, n_train=512, lr=0.5, small_batch=16, lr_cap=8.0, hessian_subsample=128,
            studies=((0.0, "minima"), (0.2, "minima"), (0.2, "init")), escape_paths=64, escape_steps=500, loss_rise=0.05,
            cnn=dict(n_seeds=8, n_steps=1000, hessian_subsample=64, label_noise=0.2))
FAST = dict(n_seeds=2, n_steps=60, n_train=128, lr=0.5, small_batch=16, lr_cap=8.0, hessian_subsample=32,
            studies=((0.2, "minima"),), escape_paths=4, escape_steps=30, loss_rise=0.05)
# (the CNN row runs in the full figure only; tests/test_generalization.py checks the CNN arms)


def compute(config: dict, key):
    k_study, k_escape = jr.split(key)
    out = {}
    for eta, reference in config["studies"]:
        arms = ARMS if reference == "minima" else tuple(a for a in ARMS if a != "linear_rule")
        res = so.experiments.large_batch_gap(key=k_study, label_noise=eta, reference=reference, arms=arms,
                                             **{k: config[k] for k in STUDY})
        print(f"--- label noise {eta:g}, equal trace at the {res.reference}\n" + res.table(), flush=True)
        out[f"gap_{int(round(100 * eta)):02d}_{reference}"] = res
    if "cnn" in config:
        cnn = config["cnn"]
        res = so.experiments.large_batch_gap(key=k_study, model="cnn", reference="minima",
                                             **{**{k: config[k] for k in STUDY}, **cnn})
        print("--- small CNN, label noise 0.2, equal trace at the large-batch minima\n" + res.table(), flush=True)
        out["cnn_20_minima"] = res
    # escape from seed 0's large-batch minimum of the label-noise task (the same key: the same split and inits)
    eta = max(e for e, _ in config["studies"])
    train, _ = so.experiments.digits_split(key=jr.split(k_study, 4)[0], n_train=config["n_train"], label_noise=eta)
    res = next(out[k] for k in out if k.startswith("gap_") and out[k].label_noise == eta)
    minimum = res.final[res.arms.index("large_batch"), 0]
    esc = so.experiments.network_escape(train, minimum, key=k_escape, lr=config["lr"], small_batch=config["small_batch"],
                                        loss_rise=config["loss_rise"], n_paths=config["escape_paths"],
                                        max_steps=config["escape_steps"], hessian_subsample=config["hessian_subsample"])
    print(esc.table(), flush=True)
    out["escape"] = esc
    return out


def plot(result, meta: dict):
    import matplotlib.pyplot as plt

    gaps = sorted((k for k in result if k.startswith("gap_")),
                  key=lambda k: (result[k].label_noise, result[k].reference != "large-batch minima"))
    gaps += [k for k in result if k.startswith("cnn_")]
    fig, axes = plt.subplots(len(gaps), 3, figsize=(16, 4.2 * len(gaps)), squeeze=False)
    for row, k in enumerate(gaps):
        so.plot.large_batch_gap(result[k], ax=axes[row, :2])
        axes[row, 0].set_title(f"{result[k].model}, label noise {result[k].label_noise:g}, equal trace at the "
                               f"{result[k].reference}: "
                               + axes[row, 0].get_title(), fontsize=8)
        if k == gaps[-1 if "cnn_20_minima" not in result else -2]:
            so.plot.network_escape(result["escape"], ax=axes[row, 2])
        else:
            axes[row, 2].axis("off")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
