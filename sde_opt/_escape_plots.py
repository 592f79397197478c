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


_KIND_STYLE = {
    "gd": ("C7", "v", "GD from the saddle"), "gd_perturbed": ("C1", "s", "GD from a random start"),
    "pgd": ("C2", "D", "perturbed GD"), "noisy_gd": ("C0", "o", "noisy GD"), "sgd": ("C3", "^", "SGD"),
    "sde": ("k", "o", "SDE"),
}


def plot_saddle_escape(results, ax=None, *, kinds=None):
    """Exit time from the ball around a strict saddle against ``log(1/σ)/|λmin|`` for a
    :class:`~sde_opt.saddles.SaddleEscape` (or a sequence of them, e.g. a landscape and a
    network: in these units every saddle's times grow with slope 1): mean times with ±2 s.e.
    bars, each kind's closed form as a line, and GD from the saddle as a censored marker
    (▲ at the horizon). The legend gives the fitted slopes in ``log(1/σ)``."""
    from ._saddles import SaddleEscape

    results = (results,) if isinstance(results, SaddleEscape) else tuple(results)
    ax = _axes(ax, (6.5, 4.5))
    fills = ("full", "none")
    for n, res in enumerate(results):
        a = abs(float(res.lambda_min))
        name = res.config.get("name", "")
        tag = f" [{name}]" if len(results) > 1 else ""
        for i, kind in enumerate(res.kinds):
            if kinds is not None and kind not in kinds:
                continue
            color, marker, label = _KIND_STYLE.get(kind, (None, "o", kind))
            if kind == "gd":
                ax.axhline(float(res.horizon[i]), color=color, ls=":", lw=1)
                ax.annotate(f"{label}: censored at the horizon (all paths){tag}", (0.02, float(res.horizon[i])),
                            xycoords=("axes fraction", "data"), va="bottom", fontsize=7, color=color)
                continue
            x = np.log(1.0 / np.asarray(res.sigma_eff[i])) / a
            t, se = np.asarray(res.mean_time[i]), np.asarray(res.mean_se[i])
            ok = np.asarray(res.censored[i]) == 0
            lab = (f"{label}{tag}: slope {res.slope[i] * a:.3f} ± {res.slope_se[i] * a:.3f} "
                   f"(theory {res.theory_slope[i] * a:.3f})")
            ax.errorbar(x[ok], t[ok], yerr=2 * se[ok], fmt=marker, color=color, capsize=3, ms=5,
                        fillstyle=fills[n % 2], label=lab)
            if np.any(~ok):
                ax.plot(x[~ok], t[~ok], marker="^", ls="none", color=color, alpha=0.5)
            order = np.argsort(x)
            ax.plot(x[order], np.asarray(res.theory[i])[order], "-" if kind == "sde" else "--", color=color, lw=1,
                    alpha=0.8)
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], color="C7", lw=0.8, ls="-.", label="T = log(1/σ)/|λmin| (the leading term)")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("log(1/σ) / |λmin|")
    ax.set_ylabel("exit time from the ball (SDE time)")
    ax.legend(fontsize=7)
    return ax


def plot_saddle_batch(result, ax=None):
    """SGD's exit time from the ball around a saddle against the batch size for a
    :class:`~sde_opt.saddles.SaddleBatchEscape`: mean ±2 s.e., the closed form at ``σ_eff(B)``
    as a line, and censored batch sizes (pinned at the saddle) as ▲ at the horizon."""
    ax = _axes(ax, (5, 4))
    b = np.asarray(result.batch_size)
    t, se, cens = (np.asarray(v) for v in (result.mean_time, result.mean_se, result.censored))
    ok = cens == 0
    ax.errorbar(b[ok], t[ok], yerr=2 * se[ok], fmt="o", color="C3", capsize=3, label="SGD (mean ± 2 s.e.)")
    if np.any(~ok):
        ax.plot(b[~ok], np.full((~ok).sum(), result.horizon), "^", color="C3", ms=8,
                label=f"censored at the horizon ({100 * cens[~ok].max():.0f}% of paths): pinned")
    th = np.asarray(result.theory)
    fin = np.isfinite(th)
    ax.plot(b[fin], th[fin], "--", color="k", lw=1, label="closed form at σ_eff(B)")
    ax.axhline(result.horizon, color="C7", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"batch size B (of N = {result.config.get('n_examples', '?')}, "
                  f"{'with' if result.config.get('replacement') else 'without'} replacement)")
    ax.set_ylabel("exit time from the ball (SDE time)")
    ax.legend(fontsize=7)
    return ax


def plot_injected_escape(result, ax=None):
    """Mean exit time from the sharp minimum (±2 s.e.) for each row of an
    :class:`~sde_opt.experiments.InjectedEscape`, real SGD first, each bar labelled with the
    share of its step noise along the sharp direction and the fraction of paths that left."""
    ax = _axes(ax, (6.5, 4))
    kinds = list(result.kinds)
    t, se = np.asarray(result.mean_time), np.asarray(result.mean_se)
    colors = ["C3" if k == "sgd" else "C0" for k in kinds]
    x = np.arange(len(kinds))
    ax.bar(x, t, yerr=2 * se, color=colors, capsize=4)
    for i in x:
        ax.annotate(f"sharp share {result.alignment[i]:.2f}\nleft {result.escaped[i]:.0%}", (i, t[i] + 2 * se[i]),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, ["real SGD" if k == "sgd" else k for k in kinds])
    ax.set_ylabel("mean exit time from the sharp basin (SDE time)")
    ax.set_ylim(0, 1.25 * float(np.max(t + 2 * se)))
    ax.set_title("GD + injected noise of SGD's trace at the sharp minimum, beside SGD", fontsize=9)
    return ax
