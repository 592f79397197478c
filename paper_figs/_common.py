"""Shared plumbing of the figure scripts: command line, output folder, data file, timing.

Every script ``paper_figs/<name>.py`` defines ``compute(config, key) -> result`` (a result
of the library, or a dict / tuple of results and arrays) and ``plot(result, meta) -> figure``
and ends with ``run_figure(...)``:

    python paper_figs/<name>.py [--fast] [--plot-only] [--out DIR] [--seed N]

The compute stage writes ``DIR/<name>.npz`` + ``DIR/<name>.json`` with :func:`sde_opt.save`
(config, key, package version); the plot stage reads the result back with :func:`sde_opt.load`,
draws it with ``so.plot`` and :func:`save_figure` writes ``DIR/<name>.png``, so restyling
never recomputes (``--plot-only``).
``DIR`` defaults to ``$SDE_OPT_FIG_OUT`` or ``paper_figs/out``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Callable

os.environ.setdefault("MPLBACKEND", "Agg")

import jax.random as jr

import sde_opt as so

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "out"


def out_dir(arg: str | None = None) -> pathlib.Path:
    """The output folder: ``--out``, else ``$SDE_OPT_FIG_OUT``, else ``paper_figs/out``."""
    path = pathlib.Path(arg or os.environ.get("SDE_OPT_FIG_OUT") or DEFAULT_OUT)
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_args(name: str, description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"paper_figs/{name}.py", description=description)
    parser.add_argument("--fast", action="store_true", help="small sizes (CI): seconds, not minutes")
    parser.add_argument("--plot-only", action="store_true", help="re-plot from the saved data file")
    parser.add_argument("--out", default=None, help="output folder (default $SDE_OPT_FIG_OUT or paper_figs/out)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the compute stage")
    return parser.parse_args(argv)


def run_figure(
    name: str,
    description: str,
    compute: Callable[[dict, object], object],
    plot: Callable[[object, dict], object],
    *,
    full: dict,
    fast: dict,
    argv=None,
    dpi: int = 130,
) -> pathlib.Path:
    """Parse the command line, run the compute stage (unless ``--plot-only``), then plot."""
    args = parse_args(name, description, argv)
    out = out_dir(args.out)
    stem, png = out / name, out / f"{name}.png"
    if args.plot_only:
        if not stem.with_suffix(".npz").exists():
            sys.exit(f"{stem}.npz does not exist; run `python paper_figs/{name}.py` first (without --plot-only).")
    else:
        config = dict(fast if args.fast else full, fast=args.fast, seed=args.seed)
        key = jr.key(args.seed)
        t0 = time.perf_counter()
        result = compute(config, key)
        so.save(stem, result, config=config, key=key)
        print(f"[{name}] computed in {time.perf_counter() - t0:.1f} s -> {stem}.npz/.json", flush=True)
    result, meta = so.load(stem)
    save_figure(plot(result, meta), png, dpi=dpi)
    print(f"[{name}] wrote {png}", flush=True)
    return png


def save_figure(fig, png: pathlib.Path, *, dpi: int = 130) -> pathlib.Path:
    """Write a figure (or the figure of an axes, or of an array of axes) and close it."""
    import matplotlib.pyplot as plt
    import numpy as np

    if not hasattr(fig, "savefig"):
        fig = np.ravel(fig)[0].figure
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    return png
