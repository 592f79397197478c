"""Escape from a basin: censored exit-time statistics.

The engine's :func:`sde_opt.first_exit` gives exit times with censoring at the horizon; this
module turns them into rates with exact intervals, survival curves and a test of the
exponential (memoryless) law. Closed-form rates (Kramers, Eyring–Kramers, Xie et al.) live in
:mod:`sde_opt.theory`; the sweeps of the notebooks and figures in :mod:`sde_opt.experiments`.
"""

from ._escape import (
    EscapeRate as EscapeRate,
    MemorylessTest as MemorylessTest,
    Survival as Survival,
    escape_rate as escape_rate,
    kaplan_meier as kaplan_meier,
    memoryless_test as memoryless_test,
)

__all__ = ["EscapeRate", "MemorylessTest", "Survival", "escape_rate", "kaplan_meier", "memoryless_test"]
