"""Closed forms the Monte Carlo estimates are checked against.

Stationary covariances near a minimum (continuous and discrete Lyapunov equations), escape
rates (Kramers, Eyring–Kramers, Xie et al. 2021, the exact 1-D mean exit time by quadrature),
escape times from strict saddles (Jin et al. 2017; the linearised SDE) and the law of the
running maximum of a Brownian motion (for stability radii).
"""

from ._escape_theory import (
    eyring_kramers_rate as eyring_kramers_rate,
    kramers_rate as kramers_rate,
    mean_exit_time_1d as mean_exit_time_1d,
    saddle_escape_slope as saddle_escape_slope,
    saddle_escape_time as saddle_escape_time,
    temperature as temperature,
    xie_escape_time as xie_escape_time,
)
from ._stability import (
    brownian_max_cdf as brownian_max_cdf,
    brownian_max_pdf as brownian_max_pdf,
    brownian_max_quantile as brownian_max_quantile,
)
from ._theory import ou_stationary_covariance as ou_stationary_covariance

__all__ = [
    "brownian_max_cdf", "brownian_max_pdf", "brownian_max_quantile", "eyring_kramers_rate", "kramers_rate",
    "mean_exit_time_1d", "ou_stationary_covariance", "saddle_escape_slope", "saddle_escape_time", "temperature", "xie_escape_time",
]
