"""The studies behind the notebooks, the figures and the demo (as ``optax.contrib`` holds
optax's extras): each composes public pieces into one measurement with error bars.

Escape (sharpness, batch size, sharp-to-flat, SGD against its SDE, the demo's headline),
stationary covariances against the Lyapunov solutions, GD against its gradient flow,
the stability-radius exponent study, modified-equation errors, SVAG convergence, the
scaling-rule sweeps and the edge-of-stability sweep.
"""

from ._edge_of_stability import (
    EdgeOfStability as EdgeOfStability,
    FlowComparison as FlowComparison,
    edge_of_stability as edge_of_stability,
)
from ._escape_experiments import (
    HEADLINE as HEADLINE,
    EscapeHeadline as EscapeHeadline,
    EscapeStudy as EscapeStudy,
    MethodRates as MethodRates,
    SharpToFlat as SharpToFlat,
    default_sharp_flat as default_sharp_flat,
    equal_trace_noises as equal_trace_noises,
    escape_headline as escape_headline,
    escape_vs_batch as escape_vs_batch,
    escape_vs_sharpness as escape_vs_sharpness,
    fit_log_slope as fit_log_slope,
    sgd_vs_sde_escape as sgd_vs_sde_escape,
    sharp_to_flat as sharp_to_flat,
)
from ._experiments import (
    CovarianceEstimate as CovarianceEstimate,
    GDAgainstFlow as GDAgainstFlow,
    MethodCovariance as MethodCovariance,
    Moments as Moments,
    StationarySweep as StationarySweep,
    StationarySweepConfig as StationarySweepConfig,
    batch_gradient_covariance as batch_gradient_covariance,
    gd_against_flow as gd_against_flow,
    path_moments as path_moments,
    quadratic_finite_sum as quadratic_finite_sum,
    stationary_covariance as stationary_covariance,
    stationary_covariance_sweep as stationary_covariance_sweep,
)
from ._fit import proportion_interval as proportion_interval
from ._generalization import (
    ARMS as LARGE_BATCH_ARMS,
    LargeBatchGap as LargeBatchGap,
    NetworkEscape as NetworkEscape,
    cnn_apply as cnn_apply,
    digits_split as digits_split,
    equal_trace_injections as equal_trace_injections,
    correlation_interval as correlation_interval,
    large_batch_gap as large_batch_gap,
    model_inits as model_inits,
    network_escape as network_escape,
    t_interval as t_interval,
)
from ._inject_study import InjectedEscape as InjectedEscape, injected_noise_escape as injected_noise_escape
from ._modified import (
    GDFlowErrors as GDFlowErrors,
    SGDFlowErrors as SGDFlowErrors,
    gd_modified_flow_errors as gd_modified_flow_errors,
    sgd_modified_flow_errors as sgd_modified_flow_errors,
)
from ._radius_study import (
    ExponentFit as ExponentFit,
    RadiusSetting as RadiusSetting,
    RadiusStudy as RadiusStudy,
    RadiusStudyConfig as RadiusStudyConfig,
    fit_exponent as fit_exponent,
    radius_study as radius_study,
    well_family as well_family,
)
from ._scaling import (
    LinearRuleBreakdown as LinearRuleBreakdown,
    ScalingSweep as ScalingSweep,
    linear_rule_breakdown as linear_rule_breakdown,
    scaling_rule_sweep as scaling_rule_sweep,
)
from ._svag import SVAGStudy as SVAGStudy, svag_study as svag_study

__all__ = [
    "InjectedEscape", "injected_noise_escape", "LargeBatchGap", "NetworkEscape", "cnn_apply", "digits_split",
    "equal_trace_injections", "large_batch_gap", "network_escape", "LARGE_BATCH_ARMS", "correlation_interval",
    "model_inits", "proportion_interval", "t_interval",
    "HEADLINE", "CovarianceEstimate", "EscapeHeadline", "EscapeStudy", "GDAgainstFlow", "MethodCovariance",
    "MethodRates", "StationarySweep", "ExponentFit", "Moments", "RadiusSetting", "RadiusStudy",
    "RadiusStudyConfig", "SharpToFlat", "EdgeOfStability", "FlowComparison", "GDFlowErrors", "SGDFlowErrors",
    "LinearRuleBreakdown", "ScalingSweep", "SVAGStudy",
    "StationarySweepConfig", "batch_gradient_covariance", "default_sharp_flat", "edge_of_stability",
    "equal_trace_noises", "escape_headline", "escape_vs_batch", "escape_vs_sharpness",
    "fit_exponent", "fit_log_slope", "gd_against_flow", "gd_modified_flow_errors", "linear_rule_breakdown",
    "path_moments", "quadratic_finite_sum", "radius_study", "scaling_rule_sweep", "sgd_modified_flow_errors",
    "sgd_vs_sde_escape", "sharp_to_flat", "stationary_covariance", "stationary_covariance_sweep",
    "svag_study", "well_family",
]
