"""Plots of results (matplotlib, imported when a plot is drawn).

Every function takes a result and an optional ``ax`` and returns the axes it drew on; none
saves a file or sets a backend (the caller does: ``ax.figure.savefig(...)``).
"""

from ._curvature import plot_spectral_density as spectral_density
from ._escape_plots import (
    plot_escape_headline as escape_headline,
    plot_escape_study as escape_study,
    plot_injected_escape as injected_escape,
    plot_rates as rates,
    plot_saddle_batch as saddle_batch,
    plot_saddle_escape as saddle_escape,
    plot_sharp_to_flat as sharp_to_flat,
)
from ._generalization import plot_large_batch_gap as large_batch_gap, plot_network_escape as network_escape
from ._experiments import plot_stationary_covariance as stationary_covariance
from ._slice_plots import (
    plot_interpolation as interpolation,
    plot_slice_contour as slice_contour,
    plot_slice_density as slice_density,
    plot_slice_surface as slice_surface,
)
from ._tracking import plot_history as history

__all__ = ["escape_headline", "escape_study", "history", "injected_escape", "interpolation", "large_batch_gap",
           "network_escape", "rates", "saddle_batch", "saddle_escape",
           "sharp_to_flat", "slice_contour", "slice_density", "slice_surface", "spectral_density", "stationary_covariance"]
