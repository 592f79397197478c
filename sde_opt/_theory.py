"""Closed forms of the linearised (Ornstein–Uhlenbeck) picture near a minimum."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import positive, positive_int, square_matrix


def ou_stationary_covariance(hessian, noise_cov, lr, batch_size, discrete: bool = False) -> Float[Array, "d d"]:
    """Stationary covariance of SGD linearised at a minimum with Hessian ``H`` and noise ``D``.

    * ``discrete=False`` (the SDE ``dθ = −Hθ dt + √(lr/B · D) dW``): the continuous Lyapunov
      equation ``HΣ + ΣH = (lr/B) D``; with ``D = H``, ``Σ = lr/(2B) · I``.
    * ``discrete=True`` (noisy GD / SGD ``θ ← (I − lr H)θ − lr ξ``, ``Cov ξ = D/B``): the
      discrete Lyapunov equation ``Σ = (I − lr H) Σ (I − lr H)ᵀ + (lr²/B) D``
      (Mandt, Hoffman & Blei 2017; Zhu et al. 2019).

    Solved in the eigenbasis of ``H``: ``Σ̃ᵢⱼ = (lr/B) D̃ᵢⱼ / (λᵢ + λⱼ)`` and
    ``Σ̃ᵢⱼ = (lr²/B) D̃ᵢⱼ / (1 − (1 − lr λᵢ)(1 − lr λⱼ))``.

    Raises ``ValueError`` when no stationary law exists (``H`` not positive definite, or
    ``lr λ ∉ (0, 2)`` for the discrete equation).

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> h = jnp.diag(jnp.array([1.0, 4.0]))
        >>> so.ou_stationary_covariance(h, h, lr=0.1, batch_size=1)
        Array([[0.05, 0.  ],
               [0.  , 0.05]], dtype=float32)
    """
    h = square_matrix("hessian", hessian)
    d = square_matrix("noise_cov", noise_cov, dim=h.shape[0], psd=True)
    lr = positive("lr", lr)
    b = positive_int("batch_size", batch_size)
    lam, v = jnp.linalg.eigh(h)
    lam_np = np.asarray(lam)
    if lam_np.min() <= 0:
        raise ValueError(
            f"hessian must be positive definite for a stationary law; its smallest eigenvalue is {lam_np.min():.3g}."
        )
    dt = v.T @ d @ v
    if discrete:
        if float(lr) * lam_np.max() >= 2:
            raise ValueError(
                f"lr * lambda_max = {float(lr) * lam_np.max():.3g} >= 2: discrete SGD is unstable and has no "
                "stationary covariance; use lr < 2 / lambda_max."
            )
        a = 1.0 - lr * lam
        st = (lr**2 / b) * dt / (1.0 - a[:, None] * a[None, :])
    else:
        st = (lr / b) * dt / (lam[:, None] + lam[None, :])
    sigma = v @ st @ v.T
    return 0.5 * (sigma + sigma.T)
