"""Escape from strict saddles (issue 14): SGD does not converge to a strict saddle but can
linger near it; large batches make the path nearly deterministic and pin it there; noise
helps it leave, in a time ``≈ log(1/σ)/|λmin|`` (Jin et al. 2017; the SDE picture).

* :func:`saddle_escape`: exit times from a ball around the saddle for GD (from the saddle:
  censored; from a random start), perturbed GD, noisy GD, SGD and the SDE against the noise
  level, with the fitted slope in ``log(1/σ)`` and the escape direction;
* :func:`saddle_batch_escape`: SGD's exit time against the batch size;
* :func:`confirm_saddle`: a stationary point with negative curvature, by bottom-k Lanczos;
  :func:`network_saddle`: the symmetric saddle of a two-layer tanh network.

The closed forms are :func:`sde_opt.theory.saddle_escape_time` and
:func:`sde_opt.theory.saddle_escape_slope`; perturbed GD is
:class:`sde_opt.optimizers.PerturbedGD`; the landscapes :func:`sde_opt.landscapes.saddle`
and :func:`sde_opt.landscapes.strict_saddle`; the plots :func:`sde_opt.plot.saddle_escape`
and :func:`sde_opt.plot.saddle_batch`.

Examples:
    >>> import jax.random as jr, sde_opt as so
    >>> res = so.saddles.saddle_escape(sigmas=[1e-3, 1e-4], kinds=["gd", "sde"], n_paths=100, key=jr.key(0),
    ...                                progress=False)
    >>> res.lambda_min, res.censored.tolist()  # GD stays at the saddle; every SDE path leaves
    (-1.0, [[1.0, 1.0], [0.0, 0.0]])
"""

from ._saddles import (
    KINDS as KINDS,
    SaddleBatchEscape as SaddleBatchEscape,
    SaddleEscape as SaddleEscape,
    SaddleInfo as SaddleInfo,
    confirm_saddle as confirm_saddle,
    default_saddle as default_saddle,
    network_saddle as network_saddle,
    network_saddle_lambda_min as network_saddle_lambda_min,
    saddle_batch_escape as saddle_batch_escape,
    saddle_escape as saddle_escape,
)

__all__ = [
    "KINDS", "SaddleBatchEscape", "SaddleEscape", "SaddleInfo", "confirm_saddle", "default_saddle",
    "network_saddle", "network_saddle_lambda_min", "saddle_batch_escape", "saddle_escape",
]
