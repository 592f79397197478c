"""Figure: how the mini-batch noise D(θ) lines up with the Hessian H over training of the digits
MLP, for cross-entropy and for squared error: top Hessian eigenvalues, Tr(HD)/(Tr H · Tr D)
(Zhu et al. 2019) with two standard errors, the overlap of the top-k eigenspaces and the slope
of B·Var(g_B) = vᵀDv on λ along H's top eigenvectors (Xie et al. 2021 predict 1 near a minimum
of a well-specified likelihood).

All measured inside one jitted training loop by ``so.curvature.track`` (warm-started Lanczos, Hutchinson
probes, the Gram trick for D).

    python paper_figs/dh_alignment.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import _common
import jax.random as jr
import optax

import sde_opt as so

NAME = "dh_alignment"
FULL = dict(hidden=32, n_examples=1024, lr=0.5, batch_size=32, n_steps=6000, every=150, k=5, n_probes=32)
FAST = dict(hidden=8, n_examples=128, lr=0.5, batch_size=16, n_steps=300, every=50, k=3, n_probes=8)
LOSSES = ("ce", "mse")


def compute(config: dict, key) -> dict:
    k_prob, k_run = jr.split(key)
    out = {}
    opt = optax.sgd(config["lr"])
    for loss in LOSSES:
        prob = so.problems.mlp_digits(key=k_prob, hidden=(config["hidden"],), loss=loss,
                                      n_examples=config["n_examples"])
        hist = so.curvature.track(prob, opt, prob.theta0, key=k_run, n_steps=config["n_steps"], every=config["every"],
                        batch_size=config["batch_size"], k=config["k"], n_probes=config["n_probes"])
        acc = float(so.problems.accuracy(prob, hist.final))
        out[loss] = {"history": hist, "dim": int(prob.theta0.shape[0]), "accuracy": acc}
        print(f"  {loss}: loss {hist.loss[-1]:.4f}, accuracy {acc:.3f}, "
              f"slope {hist.slope[-1]:.3f}, overlap {hist.overlap[-1]:.2f}", flush=True)
    return out


def plot(data: dict, meta: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.2), constrained_layout=True)
    for loss, color in zip(LOSSES, ("C0", "C3")):
        so.plot.history(data[loss]["history"], axes, label={"ce": "cross-entropy", "mse": "squared error"}[loss],
                        color=color)
    cfg = meta["config"]
    fig.suptitle(f"D against H over SGD training (digits MLP, {cfg['hidden']} hidden, N={cfg['n_examples']}, "
                 f"lr={cfg['lr']}, B={cfg['batch_size']})", fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST, dpi=150)
