"""Stability of minima.

Linear (GD: ``lr · λmax ≤ 2``) and mean-square (SGD, exact for per-example quadratics)
stability, the Monte Carlo divergence boundary of the real optimizer, the stochastic
stability radius ``r(δ)`` with order-statistics intervals, and the edge of stability
(sharpness recorded during training, against the gradient flow).
"""

from ._edge_of_stability import (
    FlowPath as FlowPath,
    SharpnessHistory as SharpnessHistory,
    SharpnessSummary as SharpnessSummary,
    departure_step as departure_step,
    gradient_flow_path as gradient_flow_path,
    train_with_sharpness as train_with_sharpness,
)
from ._stability import (
    DivergenceBoundary as DivergenceBoundary,
    GrowthRate as GrowthRate,
    MeanSquareStability as MeanSquareStability,
    RadiusCurve as RadiusCurve,
    StabilityRadius as StabilityRadius,
    StabilityRegion as StabilityRegion,
    batch_factor as batch_factor,
    divergence_boundary as divergence_boundary,
    gd_max_lr as gd_max_lr,
    max_excursion as max_excursion,
    moment_growth_rate as moment_growth_rate,
    per_example_hessians as per_example_hessians,
    quantile_coverage as quantile_coverage,
    quantile_interval as quantile_interval,
    quantile_ranks as quantile_ranks,
    stability_radius as stability_radius,
)

__all__ = [
    "DivergenceBoundary", "FlowPath", "GrowthRate", "MeanSquareStability", "RadiusCurve", "SharpnessHistory", "SharpnessSummary",
    "StabilityRadius", "StabilityRegion", "batch_factor", "departure_step", "divergence_boundary", "gd_max_lr",
    "gradient_flow_path", "max_excursion", "moment_growth_rate", "per_example_hessians", "quantile_coverage",
    "quantile_interval", "quantile_ranks", "stability_radius", "train_with_sharpness",
]
