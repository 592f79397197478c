"""Statistics of exit times with censoring: exponential rate with an exact interval,
Kaplan–Meier survival, and a test of whether exits are memoryless.

Paths that never left by the horizon are data, not failures: each contributes its
time on test to the exposure. Results are computed in float64 NumPy/SciPy (post-processing,
not a hot path).
"""

from __future__ import annotations

import equinox as eqx
import numpy as np
from scipy import optimize, stats

from ._checks import level
from ._exit import ExitTimes
from ._io import register_result


class EscapeRate(eqx.Module):
    """Exponential escape rate from censored exit times.

    ``rate = r / T`` (maximum likelihood), ``r`` exits in total time on test ``T``; the
    interval is the exact (Garwood) Poisson-exposure interval
    ``[χ²_{α/2}(2r)/(2T), χ²_{1−α/2}(2r+2)/(2T)]``, conservative for fixed-horizon
    censoring. ``mean_time = 1/rate`` with interval ``[1/high, 1/low]``.
    """

    rate: float
    low: float
    high: float
    mean_time: float
    mean_low: float
    mean_high: float
    n_exited: int
    n_censored: int
    total_time: float
    confidence: float

    def __repr__(self):
        return (
            f"EscapeRate(rate={self.rate:.4g} [{self.low:.4g}, {self.high:.4g}], mean_time={self.mean_time:.4g}, "
            f"n_exited={self.n_exited}, n_censored={self.n_censored})"
        )


def _as_arrays(ex):
    if isinstance(ex, ExitTimes):
        return np.asarray(ex.times, np.float64), np.asarray(ex.exited, bool)
    times, exited = ex
    return np.asarray(times, np.float64), np.asarray(exited, bool)


def _drop_transient(times, exited, offset):
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}.")
    if offset:
        keep = times > offset
        times, exited = times[keep] - offset, exited[keep]
    return times, exited


def escape_rate(ex, confidence: float = 0.95, *, offset: float = 0.0) -> EscapeRate:
    """Rate of an exponential fitted to censored exit times, with an exact interval.

    Args:
        ex: :class:`ExitTimes`, or a pair ``(times, exited)``.
        confidence: two-sided level of the interval.
        offset: a relaxation time subtracted from every time first (exits before it are
            dropped with their paths), for exits that are memoryless only after a transient.
    """
    level("confidence", confidence)
    times, exited = _drop_transient(*_as_arrays(ex), offset)
    if times.size == 0:
        raise ValueError("no paths left: ex is empty, or every path exited before offset.")
    if np.any(~np.isfinite(times)) or np.any(times < 0):
        raise ValueError("times must be finite and >= 0.")
    r = int(exited.sum())
    total = float(times.sum())
    alpha = 1.0 - confidence
    rate = r / total if total > 0 else np.inf
    low = stats.chi2.ppf(alpha / 2, 2 * r) / (2 * total) if r > 0 else 0.0
    high = stats.chi2.ppf(1 - alpha / 2, 2 * r + 2) / (2 * total)
    inv = lambda x: np.inf if x == 0 else 1.0 / x
    return EscapeRate(
        rate=float(rate), low=float(low), high=float(high),
        mean_time=float(inv(rate)), mean_low=float(inv(high)), mean_high=float(inv(low)),
        n_exited=r, n_censored=int(times.size - r), total_time=total, confidence=float(confidence),
    )


class Survival(eqx.Module):
    """Kaplan–Meier estimate ``S(t)`` at the distinct exit times, with pointwise
    log–log (Kalbfleisch–Prentice) intervals from Greenwood's variance."""

    times: np.ndarray
    survival: np.ndarray
    low: np.ndarray
    high: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray

    def __call__(self, t):
        """``S(t)`` as a step function (right-continuous)."""
        idx = np.searchsorted(self.times, np.asarray(t), side="right") - 1
        return np.where(idx >= 0, self.survival[np.maximum(idx, 0)], 1.0)


def kaplan_meier(ex, confidence: float = 0.95) -> Survival:
    """Kaplan–Meier survival curve of censored exit times, with pointwise intervals."""
    level("confidence", confidence)
    times, exited = _as_arrays(ex)
    ev_t = np.unique(times[exited])
    order = np.sort(times)
    at_risk = times.size - np.searchsorted(order, ev_t, side="left")
    events = _count_events(times, exited, ev_t)
    frac = 1.0 - events / at_risk
    s = np.cumprod(frac)
    with np.errstate(divide="ignore", invalid="ignore"):
        gw = np.cumsum(events / (at_risk * np.maximum(at_risk - events, 1e-300)))
        z = stats.norm.ppf(0.5 + confidence / 2)
        log_s = np.log(s)
        se = np.sqrt(gw) / np.abs(log_s)
        low = np.where(s > 0, s ** np.exp(z * se), 0.0)
        high = np.where(s > 0, s ** np.exp(-z * se), 0.0)
    low = np.nan_to_num(low, nan=0.0)
    high = np.nan_to_num(high, nan=1.0)
    return Survival(times=ev_t, survival=s, low=low, high=high, at_risk=at_risk, events=events)


def _count_events(times, exited, ev_t):
    t_ev = np.sort(times[exited])
    return np.searchsorted(t_ev, ev_t, side="right") - np.searchsorted(t_ev, ev_t, side="left")


class MemorylessTest(eqx.Module):
    """Likelihood-ratio test of exponential (Weibull shape 1) against Weibull, with censoring.

    ``shape`` is the fitted Weibull shape (1 = memoryless, > 1 = exits pile up after a
    transient, < 1 = a mixture of fast and slow escapes); ``p_value`` from ``χ²₁``."""

    statistic: float
    p_value: float
    shape: float
    shape_low: float
    shape_high: float


def _weibull_loglik(k, times, exited):
    # profile out the scale: λ̂(k) = (Σ tᵏ / r)^(1/k)
    r = exited.sum()
    tk = np.sum(times**k)
    lam_k = tk / r
    return r * np.log(k) - r * np.log(lam_k) + (k - 1) * np.sum(np.log(times[exited])) - tk / lam_k


def memoryless_test(ex, confidence: float = 0.95, *, offset: float = 0.0) -> MemorylessTest:
    """Is the exit time exponential? Weibull likelihood-ratio test with censoring.
    ``offset`` drops an initial transient as in :func:`escape_rate`."""
    level("confidence", confidence)
    times, exited = _drop_transient(*_as_arrays(ex), offset)
    if exited.sum() < 5:
        raise ValueError(f"only {int(exited.sum())} exits; the test needs at least 5 (run longer or more paths).")
    times = np.maximum(times, np.finfo(float).tiny)
    f = lambda lk: -_weibull_loglik(np.exp(lk), times, exited)
    res = optimize.minimize_scalar(f, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10})
    k_hat = float(np.exp(res.x))
    ll1, ll0 = -res.fun, _weibull_loglik(1.0, times, exited)
    stat = max(0.0, 2 * (ll1 - ll0))
    # profile-likelihood interval for the shape
    cut = stats.chi2.ppf(confidence, 1) / 2
    g = lambda lk: -f(lk) - (ll1 - cut)
    lo = optimize.brentq(g, -5, res.x) if g(-5) < 0 else -5.0
    hi = optimize.brentq(g, res.x, 5) if g(5) < 0 else 5.0
    return MemorylessTest(statistic=stat, p_value=float(stats.chi2.sf(stat, 1)), shape=k_hat, shape_low=float(np.exp(lo)),
                          shape_high=float(np.exp(hi)))



register_result(Survival)
register_result(MemorylessTest)
