"""sde_opt: stochastic gradient descent as an ODE or SDE, in JAX.

Problem -> noise model -> dynamics -> engine -> analyses -> results. The top level holds
the spine (problems, noise models, dynamics, the engine and its regions, results on disk)
and the contract analyses; everything else is in topic submodules:

* :mod:`sde_opt.landscapes`, :mod:`sde_opt.problems`: analytic losses and finite sums on data;
* :mod:`sde_opt.curvature`: Hessian/GGN/Fisher and noise spectra, alignment, tracking;
* :mod:`sde_opt.escape`: censored exit-time statistics; :mod:`sde_opt.theory`: closed forms;
* :mod:`sde_opt.saddles`: escape from strict saddles (GD, perturbed GD, SGD, the SDE);
* :mod:`sde_opt.stability`: linear and mean-square stability, radii, edge of stability;
* :mod:`sde_opt.slices`: 1-D and 2-D slices of the loss, directions, trajectories on a slice;
* :mod:`sde_opt.optimizers`: optimizers as ODEs/SDEs, modified equations, SVAG, scaling rules;
* :mod:`sde_opt.experiments`: the studies of the notebooks and figures;
* :mod:`sde_opt.plot`: plots of results (matplotlib).
"""

__version__ = "0.1.0"

# the problem: what is optimized
from ._problem import Problem as Problem

# noise models: D(θ) and a factor G with G Gᵀ = D
from ._noise import (
    AbstractNoise as AbstractNoise,
    ConstantNoise as ConstantNoise,
    DiagonalNoise as DiagonalNoise,
    EmpiricalFisherNoise as EmpiricalFisherNoise,
    HessianNoise as HessianNoise,
    IsotropicNoise as IsotropicNoise,
    MinibatchNoise as MinibatchNoise,
    ScaledNoise as ScaledNoise,
)

# dynamics: continuous models and discrete algorithms behind one stepping interface
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

# the engine: many paths in one kernel; exit regions; diffrax for adaptive solves
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
from ._diffrax import solve_diffrax as solve_diffrax

# shaped noise injection into any optax optimizer
from ._inject import inject_noise as inject_noise

# the contract analyses (each also in its topic submodule)
from ._curvature import (
    EigResult as EigResult,
    TraceEstimate as TraceEstimate,
    hessian_eigs as hessian_eigs,
    hessian_trace as hessian_trace,
)
from ._escape import EscapeRate as EscapeRate, escape_rate as escape_rate
from ._noise_spectrum import noise_eigs as noise_eigs
from ._stability import (
    StabilityRadius as StabilityRadius,
    max_excursion as max_excursion,
    stability_radius as stability_radius,
)
from ._theory import ou_stationary_covariance as ou_stationary_covariance
from ._slices import filter_normalize as filter_normalize, loss_slice as loss_slice

# results on disk: .npz + JSON metadata, never pickle
from ._io import load as load, register_result as register_result, save as save

register_result(Ensemble)
register_result(ExitTimes)
register_result(EscapeRate)

# topic submodules
from . import (  # noqa: E402
    curvature as curvature,
    escape as escape,
    experiments as experiments,
    landscapes as landscapes,
    optimizers as optimizers,
    plot as plot,
    problems as problems,
    saddles as saddles,
    slices as slices,
    stability as stability,
    theory as theory,
)

# what `from sde_opt import *` and the API reference take: the spine, the contract and the submodules
__all__ = [
    "AbstractContinuous", "AbstractDiscrete", "AbstractDynamics", "AbstractIntegrator", "AbstractNoise",
    "AbstractObserver", "AbstractOptax", "AbstractRegion", "Ball", "CloserToOther", "ConstantNoise",
    "DiagonalNoise", "EigResult", "EmpiricalFisherNoise", "Ensemble", "EscapeRate", "EulerMaruyama",
    "ExitTimes", "FirstExit", "GD", "GradientFlow", "HalfSpace", "HessianNoise", "IsotropicNoise",
    "LossAbove", "MinibatchNoise", "ModifiedFlow", "NoisyGD", "OptaxDynamics", "OwnStep", "Problem",
    "RunningMax", "SGD", "SGDSDE", "SaveObservable", "SavePositions", "ScaledNoise", "ShuffledSGD",
    "StabilityRadius", "SummedNormals", "TraceEstimate", "curvature", "escape", "escape_rate",
    "experiments", "filter_normalize", "first_exit", "hessian_eigs", "hessian_trace", "inject_noise",
    "landscapes", "load", "loss_slice", "max_excursion", "noise_eigs", "observe", "optimizers",
    "ou_stationary_covariance", "plot", "problems", "register_result", "saddles", "save", "simulate",
    "slices", "solve_diffrax", "stability", "stability_radius", "theory",
]

_SUBMODULES = ("curvature", "escape", "theory", "stability", "optimizers", "experiments", "saddles", "slices")
_PLOT_RENAMES = {
    "plot_escape_headline": "escape_headline", "plot_escape_study": "escape_study", "plot_rates": "rates",
    "plot_sharp_to_flat": "sharp_to_flat", "plot_spectral_density": "spectral_density", "plot_history": "history",
}


def __getattr__(name: str):
    # names that lived at the top level before the topic submodules: point to the new home
    if name in _PLOT_RENAMES:
        raise AttributeError(f"sde_opt.{name} is now sde_opt.plot.{_PLOT_RENAMES[name]}.")
    for sub in _SUBMODULES:
        if name in globals()[sub].__all__:
            raise AttributeError(f"sde_opt.{name} is now sde_opt.{sub}.{name}.")
    raise AttributeError(f"module 'sde_opt' has no attribute {name!r}")
