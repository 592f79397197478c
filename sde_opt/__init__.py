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
from ._io import load as load, register_result as register_result, save as save
from ._noise import (
    AbstractNoise as AbstractNoise,
    ConstantNoise as ConstantNoise,
    DiagonalNoise as DiagonalNoise,
    EmpiricalFisherNoise as EmpiricalFisherNoise,
    HessianNoise as HessianNoise,
    IsotropicNoise as IsotropicNoise,
    MinibatchNoise as MinibatchNoise,
    gradient_covariance as gradient_covariance,
)
from ._problem import Problem as Problem
from ._theory import ou_stationary_covariance as ou_stationary_covariance

register_result(Ensemble)
