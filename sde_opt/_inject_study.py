"""Escape from a sharp minimum with injected noise of equal trace, beside mini-batch SGD.

On the 2-D sharp/flat landscape made a finite sum (``perturbed_sum``, per-example shifts),
full-batch GD plus a draw of each noise shape (:func:`sde_opt.inject_noise` before
``optax.sgd``) is scaled so that the parameter step's noise has the trace of mini-batch
SGD's at the sharp minimum, ``lr²·Tr D/B``; the fraction of paths that reach the flat
basin's side within the horizon, and their censored mean exit time, say which shapes
push SGD out of sharp basins (Zhu et al. 2019: the anisotropic, Hessian-aligned ones).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Float

from ._checks import positive, positive_int
from ._dynamics import SGD, OptaxDynamics
from ._exit import CloserToOther, first_exit
from ._inject import equal_trace, inject_noise
from ._io import register_result
from ._noise import DiagonalNoise, EmpiricalFisherNoise, HessianNoise, IsotropicNoise, MinibatchNoise
from . import landscapes

KINDS = ("sgd", "isotropic", "diagonal", "hessian", "minibatch", "fisher")


class InjectedEscape(eqx.Module):
    """Escape from the sharp minimum, one row per kind (``"sgd"``: real mini-batch SGD;
    the others: full-batch GD plus injected noise of that shape at equal trace).

    Attributes:
        kinds: the rows.
        escaped, escaped_se: fraction of paths that left the sharp basin (the Voronoi cell
            of the sharp minimum) before the horizon, and its binomial standard error.
        mean_time, mean_se: mean of ``min(T, horizon)`` (SDE time ``steps · lr``; a lower
            bound on the mean exit time when paths are censored) and its standard error.
        step_trace: ``(n_kinds,)`` the trace of the parameter step's noise covariance at the
            sharp minimum (``lr²·Tr D/B`` for every row, by construction).
        alignment: ``(n_kinds,)`` the share of that trace along the sharp direction
            (the top Hessian eigenvector at the minimum).
        horizon: the censoring time.
    """

    kinds: tuple = eqx.field(static=True)
    escaped: Float[np.ndarray, " n"]
    escaped_se: Float[np.ndarray, " n"]
    mean_time: Float[np.ndarray, " n"]
    mean_se: Float[np.ndarray, " n"]
    step_trace: Float[np.ndarray, " n"]
    alignment: Float[np.ndarray, " n"]
    horizon: float = eqx.field(static=True)

    def table(self) -> str:
        rows = [f"{'kind':>10} {'escaped':>8} {'+-se':>6} {'mean T':>8} {'+-se':>6} {'step trace':>11} {'sharp share':>11}"]
        for i, k in enumerate(self.kinds):
            rows.append(f"{k:>10} {self.escaped[i]:>8.3f} {self.escaped_se[i]:>6.3f} {self.mean_time[i]:>8.3g} "
                        f"{self.mean_se[i]:>6.2g} {self.step_trace[i]:>11.3g} {self.alignment[i]:>11.3f}")
        return "\n".join(rows) + f"\n(horizon {self.horizon:g}; equal step trace at the sharp minimum)"


def injected_noise_escape(*, kinds=KINDS, sharp=10.0, flat=1.0, transverse=1.0, barrier=0.1, angle=0.5, n_examples=32,
                          shift_std=0.2, batch_size: int = 4, lr=0.02, n_paths: int = 1000, max_steps: int = 4000,
                          key) -> InjectedEscape:
    """Escape from the sharp minimum of ``landscapes.sharp_flat(sharp, flat, barrier, angle=angle)``
    (transverse curvature ``transverse`` at both minima, so the sharp minimum is sharp
    along the escape direction only)
    made a finite sum of ``n_examples`` shifted copies (``shift_std``), for real SGD with
    batch ``batch_size`` (with replacement) and for full-batch GD plus injected noise of each
    shape in ``kinds`` (isotropic, diagonal of ``D`` at the minimum, Hessian-shaped,
    the mini-batch covariance ``D(θ)``, the empirical Fisher), each of trace ``Tr D(θ*)/B``
    at the sharp minimum ``θ*`` (:func:`sde_opt.optimizers.equal_trace`, temperature 1,
    injected before ``optax.sgd(lr)``). ``angle`` rotates the landscape so that diagonal and
    full shapes differ.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}.")
    lr = float(positive("lr", lr))
    batch_size = positive_int("batch_size", batch_size)
    n_paths = positive_int("n_paths", n_paths)
    max_steps = positive_int("max_steps", max_steps)
    k_data, k_run = jr.split(key)
    base = landscapes.sharp_flat(sharp, flat, barrier, sharp_transverse=transverse, flat_transverse=transverse,
                                 angle=angle)
    prob = landscapes.perturbed_sum(base, n_examples=n_examples, shift_std=shift_std, key=k_data)
    minima = base.info["minima"]
    theta = minima[0]
    region = CloserToOther(minima, home=0)
    d_min = MinibatchNoise().covariance(prob, theta)
    target = float(jnp.trace(d_min)) / batch_size
    shapes = {"isotropic": IsotropicNoise(1.0), "diagonal": DiagonalNoise(jnp.diag(d_min)), "hessian": HessianNoise(),
              "minibatch": MinibatchNoise(), "fisher": EmpiricalFisherNoise()}
    h_vec = jnp.linalg.eigh(base.hessian(theta))[1][:, -1]
    rows = {k: [] for k in ("escaped", "escaped_se", "mean_time", "mean_se", "step_trace", "alignment")}
    for i, kind in enumerate(kinds):
        if kind == "sgd":
            dyn = SGD(prob, lr, batch_size)
            cov = lr**2 * d_min / batch_size
        else:
            (noise,) = equal_trace(prob, theta, [shapes[kind]], trace=target)
            tx = optax.chain(inject_noise(prob, noise, temperature=1.0, seed=i), optax.sgd(lr))
            dyn = OptaxDynamics(prob, tx, lr=lr)
            cov = lr**2 * noise.covariance(prob, theta)
        ex = first_exit(dyn, theta, region, key=jr.fold_in(k_run, i), n_paths=n_paths, max_steps=max_steps)
        p = float(jnp.mean(ex.exited))
        t = np.asarray(ex.times)
        rows["escaped"].append(p)
        rows["escaped_se"].append(np.sqrt(p * (1 - p) / n_paths))
        rows["mean_time"].append(float(np.mean(t)))
        rows["mean_se"].append(float(np.std(t, ddof=1) / np.sqrt(n_paths)))
        rows["step_trace"].append(float(jnp.trace(cov)))
        rows["alignment"].append(float(h_vec @ cov @ h_vec / jnp.trace(cov)))
    return InjectedEscape(kinds=tuple(kinds), horizon=float(max_steps * lr),
                          **{k: np.asarray(v, np.float64) for k, v in rows.items()})


register_result(InjectedEscape)
