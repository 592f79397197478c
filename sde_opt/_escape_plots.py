"""Plots of the escape results (matplotlib; imported lazily). Each takes a result and an
optional ``ax`` and returns the axes; none saves a file or sets a backend."""

from __future__ import annotations

import numpy as np

_COLORS = {"hessian": "C3", "isotropic": "C0"}


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_escape_study(studies, ax=None, *, inverse=True, theory=("exact", "kramers", "xie")):
    """``log τ`` against ``1/x`` (or ``x``) for an :class:`~sde_opt.experiments.EscapeStudy`,
    a sequence of them or an :class:`~sde_opt.experiments.EscapeHeadline`: Monte Carlo with
    its interval as error bars, theory as lines."""
    from ._escape_experiments import EscapeHeadline, EscapeStudy

    if isinstance(studies, EscapeHeadline):
        studies = studies.studies
    elif isinstance(studies, EscapeStudy):
        studies = (studies,)
    ax = _axes(ax, (6.5, 4.5))
    for st in studies:
        name = st.noise
        x = np.asarray(st.x)
        xx = 1.0 / x if inverse else x
        tau, lo, hi = (np.asarray(v) for v in (st.mean_time, st.mean_low, st.mean_high))
        c = _COLORS.get(name, None)
        ax.errorbar(xx, tau, yerr=[tau - lo, hi - tau], fmt="o", color=c, capsize=3, label=f"{name} noise: Monte Carlo")
        order = np.argsort(xx)
        styles = {"exact": ("-", "exact (quadrature)"), "kramers": ("--", "Kramers"), "xie": (":", "Xie et al. (s=1)")}
        for k in theory:
            y = np.asarray(getattr(st, k))
            if np.all(np.isnan(y)):
                continue
            ls, lab = styles[k]
            ax.plot(xx[order], y[order], ls, color=c, alpha=0.8, label=f"{name}: {lab}")
    ax.set_yscale("log")
    ax.set_ylabel("mean escape time τ (SDE time)")
    return ax


def plot_sharp_to_flat(result, ax=None):
    """Bar chart of a :class:`~sde_opt.experiments.SharpToFlat`: fraction of paths that
    reached the flat minimum, per noise shape (±2 SE)."""
    ax = _axes(ax, (6, 3.5))
    names = list(result.names)
    pos = np.arange(len(names))
    ax.bar(pos, np.asarray(result.fraction), yerr=2 * np.asarray(result.stderr), capsize=4,
           color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(pos, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction escaped to the flat minimum (±2 SE)")
    return ax


def plot_rates(result, ax=None, *, exact: bool = True):
    """Escape rates of a :class:`~sde_opt.experiments.MethodRates` with their confidence
    intervals, one point per method; ``exact``: the exact SDE rate (1/mean time) as a line."""
    ax = _axes(ax, (4.5, 4))
    rate, low, high = result.field("rate"), result.field("low"), result.field("high")
    pos = np.arange(len(result.names))
    ax.errorbar(pos, rate, yerr=[rate - low, high - rate], fmt="o", capsize=5)
    if exact:
        ax.axhline(1.0 / result.exact_mean_time, color="k", ls="--", lw=1, label="exact SDE (1/mean time)")
    ax.set_xticks(pos, list(result.names), rotation=15)
    ax.set_ylabel("escape rate (1/SDE time), 95% CI")
    return ax


def plot_escape_headline(result, ax=None):
    """The headline figure of an :class:`~sde_opt.experiments.EscapeHeadline`: ``τ`` against
    ``1/λ`` for both noises, with the fitted slopes in the title."""
    ax = _axes(ax, (7, 4.8))
    plot_escape_study(result, ax)
    notes = []
    for st in result.studies:
        s, se = st.log_slope(inverse=True)
        notes.append(f"{st.noise}: d log τ / d(1/λ) = {s:.2f} ± {se:.2f}")
    cfg = result.config
    ax.set_xlabel("1 / sharpness λ")
    ax.set_title(
        f"Escape from a minimum of sharpness λ (barrier {cfg.get('barrier', '?')}, lr {cfg.get('lr', '?')}, "
        f"B {cfg.get('batch_size', '?')})\n" + "; ".join(notes),
        fontsize=8,
    )
    ax.legend(fontsize=7, ncol=2)
    return ax
