"""Plotting helpers for the escape experiments (matplotlib; imported lazily)."""

from __future__ import annotations

import numpy as np

_COLORS = {"hessian": "C3", "isotropic": "C0"}


def plot_escape_study(studies, ax=None, *, inverse=True, theory=("exact", "kramers", "xie")):
    """``log τ`` against ``1/x`` (or ``x``) for one or more :class:`EscapeStudy` (or their
    saved array dicts), Monte Carlo with its interval as error bars, theory as lines."""
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    for st in studies:
        get = (lambda k: np.asarray(st[k])) if isinstance(st, dict) else (lambda k: np.asarray(getattr(st, k)))
        name = str(get("noise")) if not isinstance(st, dict) else str(st.get("noise", ""))
        x = get("x")
        xx = 1.0 / x if inverse else x
        tau, lo, hi = get("mean_time"), get("mean_low"), get("mean_high")
        c = _COLORS.get(name, None)
        ax.errorbar(xx, tau, yerr=[tau - lo, hi - tau], fmt="o", color=c, capsize=3, label=f"{name} noise: Monte Carlo")
        order = np.argsort(xx)
        styles = {"exact": ("-", "exact (quadrature)"), "kramers": ("--", "Kramers"), "xie": (":", "Xie et al. (s=1)")}
        for k in theory:
            y = get(k)
            if np.all(np.isnan(y)):
                continue
            ls, lab = styles[k]
            ax.plot(xx[order], y[order], ls, color=c, alpha=0.8, label=f"{name}: {lab}")
    ax.set_yscale("log")
    ax.set_ylabel("mean escape time τ (SDE time)")
    return ax


def plot_sharp_to_flat(names, fraction, stderr, ax=None):
    """Bar chart: fraction of paths that reached the flat minimum, per noise shape."""
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    pos = np.arange(len(names))
    ax.bar(pos, fraction, yerr=2 * np.asarray(stderr), capsize=4, color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(pos, list(names), rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction escaped to the flat minimum (±2 SE)")
    return ax


def plot_rates(names, rate, low, high, ax=None):
    """Escape rates with their confidence intervals, one bar per method."""
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    rate, low, high = map(np.asarray, (rate, low, high))
    pos = np.arange(len(names))
    ax.errorbar(pos, rate, yerr=[rate - low, high - rate], fmt="o", capsize=5)
    ax.set_xticks(pos, list(names), rotation=15)
    ax.set_ylabel("escape rate (1/SDE time), 95% CI")
    return ax


def split_studies(data: dict) -> list[dict]:
    """The per-noise studies of :func:`sde_opt.experiments.escape_headline` data (``"<noise>_<field>"`` keys)."""
    out = []
    for kind in ("hessian", "isotropic"):
        st = {k[len(kind) + 1:]: np.asarray(v) for k, v in data.items() if k.startswith(kind + "_")}
        if st:
            st["noise"] = kind
            out.append(st)
    return out


def plot_escape_headline(data: dict, png, config: dict | None = None):
    """The headline figure: ``τ`` against ``1/λ`` for both noises, with fitted slopes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ._escape_experiments import fit_log_slope

    studies = split_studies(data)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    plot_escape_study(studies, ax)
    notes = []
    for st in studies:
        s, se = fit_log_slope(1 / st["x"], st["mean_time"], st["mean_low"], st["mean_high"])
        notes.append(f"{st['noise']}: d log τ / d(1/λ) = {s:.2f} ± {se:.2f}")
    cfg = config or {}
    ax.set_xlabel("1 / sharpness λ")
    ax.set_title(
        f"Escape from a minimum of sharpness λ (barrier {cfg.get('barrier', '?')}, lr {cfg.get('lr', '?')}, "
        f"B {cfg.get('batch_size', '?')})\n" + "; ".join(notes),
        fontsize=8,
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    plt.close(fig)
    return png
