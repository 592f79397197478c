"""Slices of a loss landscape (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

``loss_slice(problem, theta, directions, grid=...)`` evaluates ``L(θ + Σᵢ αᵢ δᵢ)`` on a 1-D
or 2-D grid in one jitted, chunked ``vmap``. Directions are plain ``(k, d)`` arrays:
filter-normalised Gaussian (:func:`random_directions`, :func:`filter_normalize`), Hessian
eigenvectors (:func:`hessian_directions`), PCA of a trajectory (:func:`pca_directions`), or
the segment between two minima with its barrier (:func:`interpolation`). Trajectories and
ensembles are placed on a slice by least squares (:func:`project_trajectory`,
:func:`path_density`). Plots: :func:`sde_opt.plot.slice_contour` and its siblings.
"""

from ._slices import (
    Interpolation as Interpolation,
    PathDensity as PathDensity,
    PCADirections as PCADirections,
    Projection as Projection,
    Slice as Slice,
    default_chunk_size as default_chunk_size,
    default_filter_axis as default_filter_axis,
    filter_normalize as filter_normalize,
    hessian_directions as hessian_directions,
    interpolation as interpolation,
    landscape_slice as landscape_slice,
    loss_slice as loss_slice,
    path_density as path_density,
    pca_directions as pca_directions,
    project_trajectory as project_trajectory,
    random_directions as random_directions,
)

__all__ = [
    "Interpolation", "PCADirections", "PathDensity", "Projection", "Slice", "default_chunk_size", "default_filter_axis",
    "filter_normalize", "hessian_directions", "interpolation", "landscape_slice", "loss_slice", "path_density",
    "pca_directions", "project_trajectory", "random_directions",
]
