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
from ._exit import (
    AbstractRegion as AbstractRegion,
    Ball as Ball,
    CloserToOther as CloserToOther,
    ExitTimes as ExitTimes,
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
    gradient_covariance as gradient_covariance,
)
from ._problem import Problem as Problem
from ._theory import ou_stationary_covariance as ou_stationary_covariance

register_result(Ensemble)
register_result(ExitTimes)
register_result(EscapeRate)
