"""Optimizers as ODEs and SDEs.

Continuous models paired with their optax optimizers (heavy ball, Nesterov, AdaGrad,
RMSprop, Adam; their SDEs), the optax transforms they correspond to, modified equations
(implicit gradient regularisation), perturbed GD for escaping saddles (Jin et al. 2017),
SVAG (Li, Malladi & Arora 2021) and the learning-rate scaling rules. Coupled
discrete/continuous paths for strong-error studies. Shaped noise injection into any optax
optimizer (:func:`inject_noise`, noises of equal trace), and two more noise models for it
(usable wherever a noise model is, e.g. ``so.SGDSDE``): the true Fisher of the model's own
predictive distribution (:class:`FisherNoise`) and noise restricted to the top-``k``
eigen-directions of the Hessian or of ``D`` (:class:`EigenNoise`).
"""

from ._dynamics import DROPOUT_STREAM as DROPOUT_STREAM, PerturbedGD as PerturbedGD, dropout_key as dropout_key
from ._inject import InjectNoiseState as InjectNoiseState, equal_trace as equal_trace, inject_noise as inject_noise
from ._noise import EigenNoise as EigenNoise, FisherNoise as FisherNoise
from ._modified import SGDModifiedFlow as SGDModifiedFlow, modified_loss as modified_loss
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
from ._scaling import (
    QuadraticRuleLoss as QuadraticRuleLoss,
    linear_rule_quadratic as linear_rule_quadratic,
    linear_scaling_rule as linear_scaling_rule,
    sqrt_scaling_rule as sqrt_scaling_rule,
)
from ._svag import (
    SVAG as SVAG,
    SVAGOptax as SVAGOptax,
    svag_adam as svag_adam,
    svag_gradient as svag_gradient,
    svag_limit_adam as svag_limit_adam,
    svag_limit_rmsprop as svag_limit_rmsprop,
    svag_rmsprop as svag_rmsprop,
    svag_weights as svag_weights,
)

__all__ = [
    "AbstractOptimizerModel", "AdaGradFlow", "AdamFlow", "AdamSDE", "HeavyBall", "InjectNoiseState", "NesterovFlow",
    "NoisyOptax", "PerturbedGD",
    "QuadraticRuleLoss", "RMSpropFlow", "RMSpropSDE", "SGDModifiedFlow", "SVAG", "SVAGOptax", "adam_moments", "coupled_paths",
    "DROPOUT_STREAM", "EigenNoise", "FisherNoise", "dropout_key", "equal_trace", "global_rmsprop", "inject_noise", "linear_rule_quadratic", "linear_scaling_rule", "modified_loss", "nesterov_sbc",
    "scale_by_global_rms", "scale_by_moments", "sqrt_scaling_rule", "svag_adam", "svag_gradient",
    "svag_limit_adam", "svag_limit_rmsprop", "svag_rmsprop", "svag_weights",
]
