"""Closed forms the Monte Carlo estimates are checked against.

Stationary covariances near a minimum (continuous and discrete Lyapunov equations), escape
rates (Kramers, Eyring–Kramers, Xie et al. 2021, the exact 1-D mean exit time by quadrature)
and the law of the running maximum of a Brownian motion (for stability radii).
"""

from ._escape_theory import (
    eyring_kramers_rate as eyring_kramers_rate,
    kramers_rate as kramers_rate,
    mean_exit_time_1d as mean_exit_time_1d,
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
    "mean_exit_time_1d", "ou_stationary_covariance", "temperature", "xie_escape_time",
]
