"""Saddle escape: exit time from a ball around a strict saddle against log(1/σ)/|λmin|.

GD from the saddle never leaves (censored); GD from a random start, perturbed GD (Jin et al.
2017), noisy GD, mini-batch SGD and the SDE leave after T ≈ [log(r√(2|λ|)/σ) + const]/|λmin|
(so.theory.saddle_escape_time; the lines), on the 4-D saddle so.saddles.default_saddle()
(eigenvalues −1, −0.25, 0.5, 2) and, for the SDE, on the symmetric saddle of a two-layer
tanh network found by bottom-k Lanczos (λmin repeated once per hidden unit). In units of
log(1/σ)/|λmin| every series has slope 1. Right: SGD's exit time against the batch size at
fixed per-example noise; the full batch (without replacement) is GD, pinned at the saddle.
"""

import jax.random as jr

import sde_opt as so
from _common import run_figure

NAME = "saddle_escape"


def compute(cfg, key):
    k_land, k_net, k_batch, k_data = jr.split(key, 4)
    saddle = so.saddles.default_saddle()
    land = so.saddles.saddle_escape(saddle, cfg["sigmas"], radius=cfg["radius"], lr=cfg["lr"], sde_dt=cfg["sde_dt"],
                                    n_paths=cfg["n_paths"], key=k_land)
    net = so.problems.teacher_student(key=k_data, n_examples=32, dim_in=3, hidden=cfg["net_hidden"],
                                      teacher_hidden=2)
    network = so.saddles.saddle_escape(net, cfg["net_sigmas"], kinds=["sde"], saddle=so.saddles.network_saddle(net),
                                       radius=cfg["net_radius"], lr=cfg["lr"], sde_dt=cfg["net_dt"],
                                       n_paths=cfg["net_paths"], n_eigs=cfg["net_hidden"] + 2, eig_method="lanczos",
                                       key=k_net)
    batch = so.saddles.saddle_batch_escape(saddle, cfg["batch_sizes"], radius=cfg["radius"], lr=cfg["lr"],
                                           n_examples=cfg["n_examples"], shift_std=cfg["shift_std"],
                                           n_paths=cfg["n_paths"], key=k_batch)
    for res in (land, network, batch):
        print(res.table())
    return {"landscape": land, "network": network, "batch": batch}


def plot(result, meta):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})
    so.plot.saddle_escape([result["landscape"], result["network"]], ax=left)
    left.set_title("Exit time from a ball (radius r) around a strict saddle", fontsize=9)
    so.plot.saddle_batch(result["batch"], ax=right)
    right.set_title("SGD: larger batches linger longer; the full batch is pinned", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    full = dict(sigmas=[1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5], radius=0.1, lr=0.05, sde_dt=0.0025,
                n_paths=4000, net_sigmas=[1e-3, 1e-4, 1e-5], net_hidden=2, net_radius=0.05, net_dt=0.01,
                net_paths=2000, batch_sizes=[1, 2, 4, 8, 16, 32, 48, 64], n_examples=64, shift_std=0.02)
    fast = dict(full, sigmas=[1e-3, 1e-4, 1e-5], sde_dt=0.01, n_paths=200, net_sigmas=[1e-3, 1e-5], net_dt=0.05,
                net_paths=100, batch_sizes=[1, 64])
    run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=full, fast=fast)
