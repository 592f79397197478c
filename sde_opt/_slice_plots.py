"""Plots of landscape slices (matplotlib; imported lazily). Each takes a result of
:mod:`sde_opt.slices` and an optional ``ax`` and returns the axes; none saves a file or sets
a backend."""

from __future__ import annotations

import numpy as np

from ._escape_plots import _axes


def _plane(result):
    from ._slices import Slice

    if not isinstance(result, Slice) or result.k != 2:
        raise ValueError("this plot needs a 2-D Slice (so.slices.landscape_slice with two directions).")
    g1, g2 = (np.asarray(g) for g in result.grid)
    return g1, g2, np.asarray(result.losses)


def plot_slice_contour(result, ax=None, *, levels=30, filled: bool = False, projection=None, log: bool = False,
                       colorbar: bool = True):
    """Contours of a 2-D :class:`~sde_opt.slices.Slice` (``filled=True``: filled contours),
    the first direction along x; optionally a :class:`~sde_opt.slices.Projection` of a
    trajectory drawn over them (start ○, end ×) and ``log`` contours of ``log L``."""
    g1, g2, z = _plane(result)
    ax = _axes(ax, (5.5, 4.5))
    zz = np.log(np.maximum(z, np.finfo(float).tiny)) if log else z
    draw = ax.contourf if filled else ax.contour
    cs = draw(g1, g2, zz.T, levels=levels, cmap="viridis")
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, label="log loss" if log else "loss")
    if projection is not None:
        c = np.asarray(projection.coords)
        if c.shape[1] != 2:
            raise ValueError("the projection must be on a 2-D slice (coords of shape (T, 2)).")
        ax.plot(c[:, 0], c[:, 1], "-", color="C3", lw=1.5, label="trajectory (projected)")
        ax.plot(c[0, 0], c[0, 1], "o", color="C3", mfc="none")
        ax.plot(c[-1, 0], c[-1, 1], "x", color="C3")
        ax.set_title(f"max relative distance from the plane {float(np.max(projection.relative_residual)):.2g}",
                     fontsize=8)
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    return ax


def plot_slice_surface(result, ax=None, *, cmap: str = "viridis"):
    """A 2-D :class:`~sde_opt.slices.Slice` as a 3-D surface (``ax`` must be a 3-D axes,
    ``fig.add_subplot(projection="3d")``; one is made when ``None``)."""
    import matplotlib.pyplot as plt

    g1, g2, z = _plane(result)
    if ax is None:
        ax = plt.figure(figsize=(6, 4.5)).add_subplot(projection="3d")
    elif not hasattr(ax, "plot_surface"):
        raise ValueError('ax must be a 3-D axes: fig.add_subplot(projection="3d").')
    a, b = np.meshgrid(g1, g2, indexing="ij")
    ax.plot_surface(a, b, z, cmap=cmap, linewidth=0, antialiased=True)
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    ax.set_zlabel("loss")
    return ax


def plot_interpolation(result, ax=None):
    """The loss along an :class:`~sde_opt.slices.Interpolation` (or a 1-D
    :class:`~sde_opt.slices.Slice`), with the barrier marked: the maximum and the higher end."""
    from ._slices import Interpolation, Slice

    ax = _axes(ax, (5.5, 3.5))
    if isinstance(result, Slice):
        if result.k != 1:
            raise ValueError("plot_interpolation draws a 1-D Slice; use slice_contour for a 2-D one.")
        ax.plot(np.asarray(result.grid[0]), np.asarray(result.losses), "-")
        ax.set_xlabel("α")
        ax.set_ylabel("loss")
        return ax
    if not isinstance(result, Interpolation):
        raise ValueError(f"expected an Interpolation or a 1-D Slice, got {type(result).__name__}.")
    a, z = np.asarray(result.alphas), np.asarray(result.losses)
    ax.plot(a, z, "-", color="C0")
    top, loc, bar = float(np.max(z)), float(result.location), float(result.barrier)
    end = max(z[0], z[-1])
    ax.plot([loc], [top], "v", color="C3")
    ax.axhline(end, color="k", ls=":", lw=1)
    ax.annotate("", xy=(loc, top), xytext=(loc, end), arrowprops={"arrowstyle": "<->", "color": "C3"})
    ax.set_title(f"barrier {bar:.4g} at α = {loc:.3g}", fontsize=9)
    ax.set_xlabel("α  (θ = θ_a + α (θ_b − θ_a))")
    ax.set_ylabel("loss")
    return ax


def plot_slice_density(density, result=None, ax=None, *, index: int = -1, levels=15):
    """A :class:`~sde_opt.slices.PathDensity` (the saved time ``index``) as an image, with
    the contours of the 2-D :class:`~sde_opt.slices.Slice` ``result`` over it when given."""
    ax = _axes(ax, (5.5, 4.5))
    g1, g2 = (np.asarray(g) for g in density.grid)
    rho = np.asarray(density.density)[index]
    im = ax.pcolormesh(g1, g2, rho.T, shading="nearest", cmap="Greys")
    ax.figure.colorbar(im, ax=ax, label="path density")
    if result is not None:
        s1, s2, z = _plane(result)
        ax.contour(s1, s2, z.T, levels=levels, cmap="viridis", linewidths=0.8)
    t = float(np.asarray(density.times)[index])
    ax.set_title(f"t = {t:.3g}, on the grid {float(np.asarray(density.fraction_inside)[index]):.0%}, mean relative "
                 f"distance from the plane {float(np.asarray(density.mean_relative_residual)[index]):.2g}", fontsize=8)
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    return ax
