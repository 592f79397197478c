"""Curvature and noise spectra, matrix-free.

Curvature operators (Hessian, Gauss–Newton, Fisher, empirical Fisher) restricted to parameter
groups; Lanczos eigenpairs, Hutchinson and Hutch++ traces with standard errors, stochastic
Lanczos quadrature densities; the mini-batch noise covariance ``D(θ)`` through the ``N × N``
Gram matrix; the D–H alignment diagnostics; and tracking of all of these during training.
"""

from ._alignment import (
    Alignment as Alignment,
    alignment as alignment,
    eigenspace_overlap as eigenspace_overlap,
    gradient_noise_scale as gradient_noise_scale,
    noise_hessian_slope as noise_hessian_slope,
    noise_to_signal as noise_to_signal,
    trace_hd as trace_hd,
)
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
    SubsampledEstimate as SubsampledEstimate,
    TraceEstimate as TraceEstimate,
    curvature_operator as curvature_operator,
    eigs as eigs,
    hessian_density as hessian_density,
    hessian_eigs as hessian_eigs,
    hessian_trace as hessian_trace,
    parameter_groups as parameter_groups,
    resolve_loop as resolve_loop,
    spectral_density as spectral_density,
    subsampled as subsampled,
    trace as trace,
)
from ._edge_of_stability import lambda_max as lambda_max
from ._noise import gradient_covariance as gradient_covariance
from ._noise_spectrum import (
    GramOperator as GramOperator,
    NoiseCovariance as NoiseCovariance,
    centred_gradients as centred_gradients,
    noise_eigs as noise_eigs,
    noise_operator as noise_operator,
    noise_trace as noise_trace,
)
from ._tracking import History as History, track as track

__all__ = [
    "AbstractCurvature", "AbstractOperator", "AbstractTraceEstimator", "Alignment", "CurvatureOperator",
    "EigResult", "EmpiricalFisher", "Fisher", "GaussNewton", "GramOperator", "Hessian", "History",
    "HutchPlusPlus", "Hutchinson", "MatrixOperator", "NoiseCovariance", "SpectralDensity", "SubsampledEstimate",
    "TraceEstimate",
    "alignment", "centred_gradients", "curvature_operator", "eigenspace_overlap", "eigs", "gradient_covariance",
    "gradient_noise_scale", "hessian_density", "hessian_eigs", "hessian_trace", "lambda_max", "noise_eigs",
    "noise_hessian_slope", "noise_operator", "noise_to_signal", "noise_trace", "parameter_groups",
    "resolve_loop", "spectral_density", "subsampled", "trace", "trace_hd", "track",
]
