"""Figure: stationary covariance near a minimum as the learning rate grows: real SGD, noisy
GD and the SDE (Euler–Maruyama at a fine step) against the continuous Lyapunov solution
HΣ + ΣH = (lr/B) D and the discrete one Σ = (I − lr H) Σ (I − lr H)ᵀ + (lr²/B) D.

The problem is a finite sum of shifted quadratics with D = H exactly (so the SDE predicts
Σ = lr/(2B) · I); SGD and noisy GD follow the discrete solution, Σ̃ᵢᵢ = lr/(B(2 − lr λᵢ)),
which departs from the SDE as lr λᵢ grows and blows up at lr = 2/λ_max.

    python paper_figs/stationary_covariance.py [--fast] [--plot-only] [--out DIR]
"""

from __future__ import annotations

import dataclasses

import _common
import sde_opt as so
from sde_opt.experiments import StationarySweepConfig, stationary_covariance_sweep

NAME = "stationary_covariance"
FULL = dataclasses.asdict(StationarySweepConfig())
FAST = dataclasses.asdict(
    StationarySweepConfig(lrs=(0.05, 0.2, 0.45), n_paths=200, n_steps=600, sde_dt=0.005, sde_time=8.0, burn_in=3.0)
)


def sweep_config(config: dict) -> StationarySweepConfig:
    fields = {f.name for f in dataclasses.fields(StationarySweepConfig)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return StationarySweepConfig(**kw)


def compute(config: dict, key) -> so.experiments.StationarySweep:
    return stationary_covariance_sweep(sweep_config(config), key=key, verbose=True)


def plot(sweep: so.experiments.StationarySweep, meta: dict):
    print(sweep.table())
    return so.plot.stationary_covariance(sweep)[0].figure


if __name__ == "__main__":
    _common.run_figure(NAME, __doc__.splitlines()[0], compute, plot, full=FULL, fast=FAST)
