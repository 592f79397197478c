"""Figure: escape from the sharp minimum of the 2-D sharp/flat landscape with injected noise of
equal trace, beside real mini-batch SGD (issue 13, part 3).

The landscape is sharp (curvature 10) along the escape direction only and rotated, and is made a
finite sum of shifted copies; real SGD runs with B = 4. Full-batch GD plus a draw of each shape
(``so.inject_noise`` before ``optax.sgd``: isotropic, the diagonal of D, Hessian-shaped, the
mini-batch covariance D(θ), the empirical Fisher) is scaled so that the parameter step's noise has
SGD's trace at the sharp minimum. Bars: mean exit time (±2 s.e.); labels: the share of the step
noise along the sharp direction and the fraction of paths that left.

    python paper_figs/injected_escape.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import _common
import sde_opt as so

NAME = "injected_escape"
FULL = dict(n_paths=2000, max_steps=4000, batch_size=4, barrier=0.1, shift_std=0.2, lr=0.02)
FAST = dict(n_paths=64, max_steps=400, batch_size=4, barrier=0.1, shift_std=0.2, lr=0.02)


def compute(config: dict, key):
    kw = {k: config[k] for k in ("n_paths", "max_steps", "batch_size", "barrier", "shift_std", "lr")}
    res = so.experiments.injected_noise_escape(key=key, **kw)
    print(res.table())
    return res


def plot(result, meta: dict):
    return so.plot.injected_escape(result).figure


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
