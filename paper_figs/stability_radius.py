"""Figure: the stochastic stability radius r(δ) and the claim r ∝ 1/ρ(H).

(a) Validation: r(δ) of Brownian motion watched every dt (one simulation, pointwise 95%
order-statistics intervals) against the series law of sup|W| with and without the
Broadie–Glasserman–Kou shift 0.5826 σ√dt.
(b–d) r(0.1) at horizon T against the sharpness κ = L''(θ*) of 1-D wells in three families —
no barrier (quadratic), barrier fixed (the basin narrows as κ^{-1/2}) and basin width fixed
(the barrier grows as κ) — for D = H and isotropic noise, the SDE and real SGD, with the
fitted exponent p of r ∝ κ^p in the legend; the claim is p = −1 (grey guide).

    python paper_figs/stability_radius.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import _common
import sde_opt as so
from sde_opt.experiments import RadiusStudyConfig, radius_study

NAME = "stability_radius"
FULL = {"study": dataclasses.asdict(RadiusStudyConfig()), "bm_paths": 50_000, "bm_steps": 200, "bm_lr": 0.02}
FAST = {"study": dataclasses.asdict(RadiusStudyConfig(kappas=(1.0, 3.0, 9.0), n_paths=300, substeps=4,
                                                      horizon=5.0)),
        "bm_paths": 2000, "bm_steps": 50, "bm_lr": 0.08}


def compute(config: dict, key) -> dict:
    k_bm, k_study = jr.split(key)
    lr, steps = config["bm_lr"], config["bm_steps"]
    flat = so.Problem(lambda th: 0.0 * jnp.sum(th), info={"dim": 1})
    bm = so.SGDSDE(flat, lr, 1, so.IsotropicNoise(1.0 / lr))  # σ = 1
    rad = so.stability_radius(bm, jnp.zeros(1), key=k_bm, delta=0.1, n_steps=steps, n_paths=config["bm_paths"])
    deltas = np.geomspace(0.01, 0.9, 40)
    t = float(rad.ts[-1])
    brownian = {"delta": deltas, "curve": rad.curve(deltas), "t": t, "dt": lr,
                "law": np.array([so.theory.brownian_max_quantile(1 - d, t, dt=lr) for d in deltas]),
                "law_continuous": np.array([so.theory.brownian_max_quantile(1 - d, t) for d in deltas])}
    cfg = RadiusStudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["study"].items()})
    study = radius_study(cfg, key=k_study, progress=True)
    print(study.table(), flush=True)
    return {"brownian": brownian, "study": study}


STYLE = {("hessian", "sde"): ("C0", "-", "o"), ("hessian", "sgd"): ("C0", "--", "s"),
         ("hessian", "noisy_gd"): ("C0", ":", "^"), ("isotropic", "sde"): ("C3", "-", "o"),
         ("isotropic", "sgd"): ("C3", "--", "s"), ("isotropic", "noisy_gd"): ("C3", ":", "^")}
TITLES = {"quadratic": "no barrier (quadratic)", "fixed_barrier": "barrier fixed, basin ∝ κ^-1/2",
          "fixed_width": "basin width fixed, barrier ∝ κ"}


def plot(data: dict, meta: dict):
    import matplotlib.pyplot as plt

    bm, study = data["brownian"], data["study"]
    cfg = study.config
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4), constrained_layout=True)
    ax = axes[0]
    d, curve = bm["delta"], bm["curve"]
    ax.fill_between(d, curve.low, curve.high, color="C0", alpha=0.25, lw=0, label="95% interval")
    ax.plot(d, curve.radius, "C0-", lw=1.5, label=f"simulated, every dt = {bm['dt']:g}")
    ax.plot(d, bm["law"], "k--", lw=1.2, label="series law, BGK-shifted")
    ax.plot(d, bm["law_continuous"], ":", color="0.5", lw=1.2, label="continuous-time law")
    ax.set_xscale("log")
    ax.set_xlabel("δ")
    ax.set_ylabel("r(δ): (1−δ)-quantile of sup|W|")
    ax.set_title(f"(a) Brownian motion, T = {bm['t']:g}", fontsize=10)
    ax.legend(fontsize=7)

    kappas = study.kappas
    for ax, fam, letter in zip(axes[1:], cfg.families, "bcd"):
        first = [st.radius[0] for st in study.settings if st.family == fam]
        anchor = float(np.nanmedian(first)) if first else 1.0
        for st in study.settings:
            if st.family != fam:
                continue
            color, ls, marker = STYLE[(st.noise, st.dynamics)]
            r, lo, hi = st.radius, st.low, st.high
            lab = f"{'D=H' if st.noise == 'hessian' else 'D=σ²'}, {st.dynamics}"
            if st.fit is not None:
                lab += f": p = {st.fit.exponent:.2f} [{st.fit.low:.2f}, {st.fit.high:.2f}]"
            if st.fit_local is not None:
                lab += f"; local ({st.fit_local.kappa_min:g}–{st.fit_local.kappa_max:g}) {st.fit_local.exponent:.2f}"
            ok = np.isfinite(r) & np.isfinite(hi)
            n_inf = int(np.sum(np.isnan(r) & np.isfinite(st.escaped)))
            if n_inf:
                lab += f"; {n_inf} κ blew up"
            ax.errorbar(kappas[ok], r[ok], yerr=np.stack([r[ok] - lo[ok], hi[ok] - r[ok]]), color=color, ls=ls,
                        marker=marker, ms=4, capsize=2, lw=1.2, label=lab)
        k0 = kappas[0]
        ax.plot(kappas, anchor * (kappas / k0) ** -1.0, color="0.6", lw=3, alpha=0.4, label="claim: r ∝ 1/κ")
        ax.axvline(2 / cfg.lr, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sharpness κ = ρ(H)")
        ax.set_ylabel(f"r(δ = {cfg.delta}) at T = {cfg.horizon:g}")
        ax.set_title(f"({letter}) {TITLES[fam]}", fontsize=10)
        ax.legend(fontsize=6.5, loc="best")
    fig.suptitle(f"Stochastic stability radius: lr = {cfg.lr}, B = {cfg.batch_size}; SDE at dt = lr/"
                 f"{cfg.substeps} (grid-corrected), real SGD with D(θ*) matched; dotted line: lr κ = 2",
                 fontsize=10)
    return fig


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
