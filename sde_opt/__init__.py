"""sde_opt: stochastic gradient descent as an ODE or SDE, in JAX.

Problems -> noise models -> dynamics -> the engine -> analyses. See the README for a tour.
"""

__version__ = "0.1.0"

from . import landscapes as landscapes, problems as problems
from ._diffrax import solve_diffrax as solve_diffrax
from ._dynamics import (
    AbstractContinuous as AbstractContinuous,
    AbstractDiscrete as AbstractDiscrete,
    AbstractDynamics as AbstractDynamics,
    AbstractOptax as AbstractOptax,
    GD as GD,
    GradientFlow as GradientFlow,
    ModifiedFlow as ModifiedFlow,
    NoisyGD as NoisyGD,
    OptaxDynamics as OptaxDynamics,
    SGD as SGD,
    SGDSDE as SGDSDE,
    ShuffledSGD as ShuffledSGD,
)
from ._engine import Ensemble as Ensemble, simulate as simulate
from ._engine import observe as observe
from ._integrators import (
    AbstractIntegrator as AbstractIntegrator,
    EulerMaruyama as EulerMaruyama,
    OwnStep as OwnStep,
    SummedNormals as SummedNormals,
)
from ._observers import (
    AbstractObserver as AbstractObserver,
    RunningMax as RunningMax,
    SaveObservable as SaveObservable,
    SavePositions as SavePositions,
)
from ._escape import (
    EscapeRate as EscapeRate,
    MemorylessTest as MemorylessTest,
    Survival as Survival,
    escape_rate as escape_rate,
    kaplan_meier as kaplan_meier,
    memoryless_test as memoryless_test,
)
from ._escape_theory import (
    eyring_kramers_rate as eyring_kramers_rate,
    kramers_rate as kramers_rate,
    mean_exit_time_1d as mean_exit_time_1d,
    temperature as temperature,
    xie_escape_time as xie_escape_time,
)
from ._escape_plots import (
    plot_escape_headline as plot_escape_headline,
    plot_escape_study as plot_escape_study,
    plot_rates as plot_rates,
    plot_sharp_to_flat as plot_sharp_to_flat,
)
from ._escape_experiments import (
    EscapeStudy as EscapeStudy,
    SharpToFlat as SharpToFlat,
    default_sharp_flat as default_sharp_flat,
    escape_headline as escape_headline,
    equal_trace_noises as equal_trace_noises,
    escape_vs_batch as escape_vs_batch,
    escape_vs_sharpness as escape_vs_sharpness,
    fit_log_slope as fit_log_slope,
    sgd_vs_sde_escape as sgd_vs_sde_escape,
    sharp_to_flat as sharp_to_flat,
)
from ._exit import (
    AbstractRegion as AbstractRegion,
    Ball as Ball,
    CloserToOther as CloserToOther,
    ExitTimes as ExitTimes,
    FirstExit as FirstExit,
    HalfSpace as HalfSpace,
    LossAbove as LossAbove,
    first_exit as first_exit,
)
from ._io import load as load, register_result as register_result, save as save
from ._noise import (
    AbstractNoise as AbstractNoise,
    ConstantNoise as ConstantNoise,
    DiagonalNoise as DiagonalNoise,
    EmpiricalFisherNoise as EmpiricalFisherNoise,
    HessianNoise as HessianNoise,
    IsotropicNoise as IsotropicNoise,
    MinibatchNoise as MinibatchNoise,
    ScaledNoise as ScaledNoise,
    gradient_covariance as gradient_covariance,
)
from ._problem import Problem as Problem
from ._theory import ou_stationary_covariance as ou_stationary_covariance

register_result(Ensemble)
register_result(ExitTimes)
register_result(EscapeRate)

# curvature and noise spectra, alignment, tracking (issue 3)
from ._curvature import (
    AbstractCurvature as AbstractCurvature,
    AbstractOperator as AbstractOperator,
    AbstractTraceEstimator as AbstractTraceEstimator,
    CurvatureOperator as CurvatureOperator,
    EigResult as EigResult,
    EmpiricalFisher as EmpiricalFisher,
    Fisher as Fisher,
    GaussNewton as GaussNewton,
    Hessian as Hessian,
    HutchPlusPlus as HutchPlusPlus,
    Hutchinson as Hutchinson,
    MatrixOperator as MatrixOperator,
    SpectralDensity as SpectralDensity,
    TraceEstimate as TraceEstimate,
    curvature_operator as curvature_operator,
    eigs as eigs,
    hessian_density as hessian_density,
    hessian_eigs as hessian_eigs,
    hessian_trace as hessian_trace,
    parameter_groups as parameter_groups,
    plot_spectral_density as plot_spectral_density,
    spectral_density as spectral_density,
    trace as trace,
)
from ._noise_spectrum import (
    GramOperator as GramOperator,
    NoiseCovariance as NoiseCovariance,
    centred_gradients as centred_gradients,
    noise_eigs as noise_eigs,
    noise_operator as noise_operator,
    noise_trace as noise_trace,
)
from ._alignment import (
    Alignment as Alignment,
    alignment as alignment,
    eigenspace_overlap as eigenspace_overlap,
    gradient_noise_scale as gradient_noise_scale,
    noise_hessian_slope as noise_hessian_slope,
    noise_to_signal as noise_to_signal,
    trace_hd as trace_hd,
)
from ._tracking import History as History, plot_history as plot_history, track as track

# stability of minima: linear, mean-square, Monte Carlo boundary, stability radius (issue 5)
from ._stability import (
    DivergenceBoundary as DivergenceBoundary,
    GrowthRate as GrowthRate,
    MeanSquareStability as MeanSquareStability,
    RadiusCurve as RadiusCurve,
    StabilityRadius as StabilityRadius,
    StabilityRegion as StabilityRegion,
    brownian_max_cdf as brownian_max_cdf,
    brownian_max_pdf as brownian_max_pdf,
    brownian_max_quantile as brownian_max_quantile,
    divergence_boundary as divergence_boundary,
    gd_max_lr as gd_max_lr,
    max_excursion as max_excursion,
    moment_growth_rate as moment_growth_rate,
    per_example_hessians as per_example_hessians,
    quantile_interval as quantile_interval,
    stability_radius as stability_radius,
)
from ._edge_of_stability import (
    FlowPath as FlowPath,
    SharpnessHistory as SharpnessHistory,
    departure_step as departure_step,
    edge_of_stability as edge_of_stability,
    gradient_flow_path as gradient_flow_path,
    lambda_max as lambda_max,
    train_with_sharpness as train_with_sharpness,
)

# optimizers as ODEs and SDEs, modified equations, SVAG and scaling rules (issue 6)
from ._optimizers import (
    AbstractOptimizerModel as AbstractOptimizerModel,
    AdaGradFlow as AdaGradFlow,
    AdamFlow as AdamFlow,
    AdamSDE as AdamSDE,
    HeavyBall as HeavyBall,
    NesterovFlow as NesterovFlow,
    NoisyOptax as NoisyOptax,
    RMSpropFlow as RMSpropFlow,
    RMSpropSDE as RMSpropSDE,
    adam_moments as adam_moments,
    coupled_paths as coupled_paths,
    global_rmsprop as global_rmsprop,
    nesterov_sbc as nesterov_sbc,
    scale_by_global_rms as scale_by_global_rms,
    scale_by_moments as scale_by_moments,
)
from ._modified import (
    SGDModifiedFlow as SGDModifiedFlow,
    gd_modified_flow_errors as gd_modified_flow_errors,
    modified_loss as modified_loss,
    sgd_modified_flow_errors as sgd_modified_flow_errors,
)
from ._svag import (
    SVAG as SVAG,
    SVAGOptax as SVAGOptax,
    svag_adam as svag_adam,
    svag_gradient as svag_gradient,
    svag_limit_adam as svag_limit_adam,
    svag_limit_rmsprop as svag_limit_rmsprop,
    svag_rmsprop as svag_rmsprop,
    svag_study as svag_study,
    svag_weights as svag_weights,
)
from ._scaling import (
    linear_rule_breakdown as linear_rule_breakdown,
    linear_rule_quadratic as linear_rule_quadratic,
    linear_scaling_rule as linear_scaling_rule,
    scaling_rule_sweep as scaling_rule_sweep,
    sqrt_scaling_rule as sqrt_scaling_rule,
)
