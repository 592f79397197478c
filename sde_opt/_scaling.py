"""Scaling rules: how to change hyperparameters with the batch size so that the SDE — and
hence, where the SDE is accurate, the optimizer's behaviour — stays the same.

* **Linear rule** (SGD; Krizhevsky 2014, Goyal et al. 2017, justified by the SDE
  ``dθ = −∇L dt + √(lr/B · D) dW``, which depends on ``lr/B`` only): ``B → κB``,
  ``lr → κ·lr``, steps ``→ steps/κ`` (same SDE time ``t = k·lr``). Momentum is kept.
* **Square-root rule** (RMSprop, Adam; Malladi et al. 2022, Definition 5.1, from the SDEs
  of :class:`sde_opt.optimizers.RMSpropSDE` / :class:`sde_opt.optimizers.AdamSDE`, which depend on
  ``σ₀ = σ·lr``, ``cᵢ = (1 − βᵢ)/lr²`` and ``ε₀ = ε·lr``): ``B → κB``, ``lr → √κ·lr``,
  ``1 − β → κ(1 − β)``, ``ε → ε/√κ`` (``ε → ε/κ`` when it sits inside the root),
  ``initial_scale → initial_scale/κ``, steps ``→ steps/κ`` (same time ``t = k·lr²``).

The rules are exact for the SDE and approximate for the optimizer: they break when the
scaled step leaves the SDE regime, e.g. when ``κ·lr`` approaches the stability limit
``2/λ_max`` of GD (:func:`linear_rule_quadratic` gives the closed form on a quadratic,
:func:`scaling_rule_sweep` measures it on any problem).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._checks import positive, square_matrix
from ._dynamics import SGD, SGDSDE
from ._engine import simulate
from ._io import register_result
from ._noise import MinibatchNoise
from ._problem import Problem
from ._theory import ou_stationary_covariance


def _scale_int(name: str, value, factor: float) -> int:
    scaled = value * factor
    out = int(round(scaled))
    if out < 1 or abs(scaled - out) > 1e-6 * max(1.0, abs(scaled)):
        raise ValueError(
            f"{name}={value} times {factor:g} is {scaled:g}, not a whole number >= 1; choose kappa so that "
            f"{name} scales to an integer."
        )
    return out


def _common(kappa, lr_factor, hp: dict) -> dict:
    out = dict(hp)
    out["lr"] = float(lr_factor) * float(hp["lr"])
    if hp.get("batch_size") is not None:
        out["batch_size"] = _scale_int("batch_size", hp["batch_size"], kappa)
    if hp.get("n_steps") is not None:
        out["n_steps"] = _scale_int("n_steps", hp["n_steps"], 1.0 / kappa)
    return out


def linear_scaling_rule(kappa, **hparams) -> dict:
    """The linear scaling rule for SGD (and SGD with momentum): batch ``×κ``, ``lr ×κ``,
    ``n_steps ÷κ``; any other entry (``momentum``, ...) is kept.

    Args:
        kappa: the batch-size factor ``κ > 0``.
        **hparams: at least ``lr``; optionally ``batch_size`` and ``n_steps`` (which must
            scale to whole numbers).

    Returns:
        A new dict of hyperparameters.

    Examples:
        >>> import sde_opt as so
        >>> so.optimizers.linear_scaling_rule(4, lr=0.1, batch_size=32, n_steps=1000)
        {'lr': 0.4, 'batch_size': 128, 'n_steps': 250}
    """
    kappa = float(positive("kappa", kappa))
    if "lr" not in hparams:
        raise ValueError("linear_scaling_rule needs lr=...")
    return _common(kappa, kappa, hparams)


def sqrt_scaling_rule(kappa, *, eps_in_sqrt: bool = False, **hparams) -> dict:
    """The square-root scaling rule of Malladi et al. (2022) for RMSprop and Adam:
    batch ``×κ``, ``lr ×√κ``, ``1 − β ×κ`` for each of ``decay``, ``b1``, ``b2``,
    ``eps ÷√κ`` (``÷κ`` with ``eps_in_sqrt=True``, optax's RMSprop default), ``initial_scale
    ÷κ`` (the second moment scales with the noise variance), ``n_steps ÷κ``. Other entries
    are kept.

    Examples:
        >>> import sde_opt as so
        >>> hp = so.optimizers.sqrt_scaling_rule(4, lr=1e-3, batch_size=64, b1=0.9, b2=0.999, eps=1e-8)
        >>> hp["lr"], hp["batch_size"], round(hp["b2"], 6), hp["eps"]
        (0.002, 256, 0.996, 5e-09)
    """
    kappa = float(positive("kappa", kappa))
    if "lr" not in hparams:
        raise ValueError("sqrt_scaling_rule needs lr=...")
    out = _common(kappa, np.sqrt(kappa), hparams)
    for name in ("decay", "b1", "b2"):
        if hparams.get(name) is not None:
            beta = 1.0 - kappa * (1.0 - float(hparams[name]))
            if not 0.0 <= beta < 1.0:
                raise ValueError(
                    f"{name}={hparams[name]} with kappa={kappa:g} gives {name}={beta:g} outside [0, 1); "
                    f"1 − {name} must stay below 1, i.e. kappa <= {1.0 / (1.0 - float(hparams[name])):g}."
                )
            out[name] = beta
    if hparams.get("eps") is not None:
        out["eps"] = float(hparams["eps"]) / float(kappa if eps_in_sqrt else np.sqrt(kappa))
    if hparams.get("initial_scale") is not None:
        out["initial_scale"] = float(hparams["initial_scale"]) / kappa
    return out


# ----------------------------------------------------------------------------- experiments


class QuadraticRuleLoss(eqx.Module):
    """Stationary losses under the linear rule on a quadratic (:func:`linear_rule_quadratic`):
    ``sde_loss`` (the same for every ``κ``), ``sgd_loss`` (``inf`` past ``κ*``), their
    ``ratio`` per ``κ`` in ``kappas``, and ``kappa_max = κ*``."""

    kappas: np.ndarray
    sde_loss: np.ndarray
    sgd_loss: np.ndarray
    ratio: np.ndarray
    kappa_max: float


class ScalingSweep(eqx.Module):
    """A statistic of the final iterate at the same SDE time for each ``κ`` (:func:`scaling_rule_sweep`):
    ``mean`` and ``se`` over the finite paths, the fraction ``diverged`` of non-finite
    paths, and the scaled ``lr`` and ``batch_size`` per ``κ`` (``nan`` if the rule has none)."""

    kappas: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    diverged: np.ndarray
    lr: np.ndarray
    batch_size: np.ndarray


class LinearRuleBreakdown(eqx.Module):
    """Real SGD under the linear rule against the SDE every ``κ`` shares (:func:`linear_rule_breakdown`).

    Attributes:
        sweep: the :class:`ScalingSweep` of SGD at ``(κ·lr, κ·B)``.
        sde_mean, sde_se: ``E L`` of the SDE and its standard error.
        lambda_max: the top Hessian eigenvalue at the end point; kappa_max: ``2/(lr·λ_max)``.
        z: ``(n,)`` SGD's deviation from the SDE in standard errors.
    """

    sweep: ScalingSweep
    sde_mean: float
    sde_se: float
    lambda_max: float
    kappa_max: float
    z: np.ndarray


def linear_rule_quadratic(hessian, lr, batch_size, kappas, noise_cov=None) -> QuadraticRuleLoss:
    """Where the linear rule breaks, in closed form: SGD on a quadratic with Hessian ``H``
    and gradient noise ``D`` (default ``D = H``), scaled by ``lr → κ·lr``, ``B → κB``.

    The SDE's stationary loss ``E L = ½ tr(HΣ)``, ``HΣ + ΣH = (lr/B) D``, is the same for
    every ``κ``; discrete SGD's solves ``Σ = (I − κlr H)Σ(I − κlr H) + (κlr)²/(κB) D``
    (:func:`sde_opt.ou_stationary_covariance`) and grows like ``1/(2 − κ·lr·λ)`` per mode
    (for ``D = H``: ``E L = Σᵢ λᵢ lr/(2B(2 − κ lr λᵢ))``), diverging at
    ``κ* = 2/(lr·λ_max)``.

    Returns a :class:`QuadraticRuleLoss`.
    """
    h = np.asarray(square_matrix("hessian", hessian), dtype=np.float64)
    d = h if noise_cov is None else np.asarray(square_matrix("noise_cov", noise_cov, dim=h.shape[0], psd=True))
    lr = float(positive("lr", lr))
    lam_max = float(np.linalg.eigvalsh(h).max())
    sde = 0.5 * float(np.trace(h @ np.asarray(ou_stationary_covariance(h, d, lr, batch_size))))
    sgd = []
    for kappa in kappas:
        if kappa * lr * lam_max >= 2.0:
            sgd.append(np.inf)
            continue
        # (κ lr)²/(κ B) · D = (κ lr)²/B · (D/κ): scale D, keep the integer batch
        sig = np.asarray(ou_stationary_covariance(h, d / kappa, kappa * lr, batch_size, discrete=True))
        sgd.append(0.5 * float(np.trace(h @ sig)))
    sgd = np.array(sgd)
    return QuadraticRuleLoss(kappas=np.asarray(kappas, float), sde_loss=np.full(len(sgd), sde), sgd_loss=sgd,
                             ratio=sgd / sde, kappa_max=2.0 / (lr * lam_max))


def scaling_rule_sweep(
    make_dynamics: Callable[[dict], object],
    rule: Callable[..., dict],
    base: dict,
    kappas,
    y0,
    *,
    key,
    n_paths: int,
    t1,
    statistic: Callable | None = None,
) -> ScalingSweep:
    """Run a dynamics at hyperparameters scaled by ``rule`` for each ``κ`` and measure a
    statistic of the final iterate at the same SDE time ``t1``.

    Args:
        make_dynamics: ``hp -> dynamics`` (e.g. ``lambda hp: so.SGD(prob, hp["lr"],
            hp["batch_size"])``); its ``natural_dt()`` sets the number of steps
            ``round(t1/dt)``.
        rule: :func:`linear_scaling_rule` or :func:`sqrt_scaling_rule` (or your own).
        base: the hyperparameters at ``κ = 1``.
        statistic: ``θ (d,) -> scalar`` per path (default: the problem's loss).

    Returns:
        a :class:`ScalingSweep`.
    """
    means, ses, div, lrs, bs = [], [], [], [], []
    for i, kappa in enumerate(kappas):
        hp = rule(kappa, **base)
        dyn = make_dynamics(hp)
        stat = statistic if statistic is not None else dyn.problem.loss
        dt = float(dyn.natural_dt())
        k = int(round(float(t1) / dt))
        if k < 1 or abs(k * dt - float(t1)) > 1e-6 * float(t1):
            raise ValueError(
                f"t1={float(t1):g} is not a whole number of steps dt={dt:g} at kappa={kappa:g}; choose t1 as a "
                "common multiple of the scaled steps so that every run ends at the same SDE time."
            )
        ens = simulate(dyn, y0, key=jr.fold_in(key, i), n_paths=n_paths, n_steps=k, save_every=k)
        final = ens.final
        vals = np.asarray(jax.vmap(stat)(final))
        ok = np.isfinite(vals) & ~np.asarray(ens.diverged)
        div.append(1.0 - ok.mean())
        v = vals[ok]
        means.append(float(v.mean()) if v.size else np.nan)
        ses.append(float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else np.nan)
        lrs.append(hp.get("lr", np.nan))
        bs.append(hp.get("batch_size", np.nan) if hp.get("batch_size") is not None else np.nan)
    return ScalingSweep(kappas=np.asarray(kappas, float), mean=np.array(means), se=np.array(ses), diverged=np.array(div),
                        lr=np.array(lrs, float), batch_size=np.array(bs, float))


def linear_rule_breakdown(problem: Problem, lr, batch_size, kappas, y0, *, key, n_paths: int, t1,
                          replacement: bool = True, sde_refine: int = 4) -> LinearRuleBreakdown:
    """Where the linear scaling rule breaks for real mini-batch SGD on ``problem``.

    Runs SGD at ``(κ·lr, κ·B)`` for each ``κ`` to time ``t1`` and reports ``E L`` with its
    standard error, next to the prediction every ``κ`` shares: the SDE
    ``dθ = −∇L dt + √(lr/B · D(θ)) dW`` (``MinibatchNoise``, integrated with step
    ``lr/sde_refine``). The rule holds while SGD's value agrees with the SDE's; it breaks
    as ``κ·lr`` nears the stability limit ``2/λ_max`` of the Hessian at the end point
    (reported as ``kappa_max``), and without replacement also as ``κB → N`` (the noise
    vanishes). Returns a :class:`LinearRuleBreakdown`.
    """
    sweep = scaling_rule_sweep(
        lambda hp: SGD(problem, hp["lr"], hp["batch_size"], replacement=replacement), linear_scaling_rule,
        {"lr": lr, "batch_size": batch_size}, kappas, y0, key=key, n_paths=n_paths, t1=t1,
    )
    sde = SGDSDE(problem, lr, batch_size, MinibatchNoise(), replacement=replacement)
    dt = float(lr) / sde_refine
    k = max(1, int(round(float(t1) / dt)))
    ens = simulate(sde, y0, key=jr.fold_in(key, 10_000), n_paths=n_paths, n_steps=k, dt=dt, save_every=k)
    vals = np.asarray(jax.vmap(problem.loss)(ens.final))
    vals = vals[np.isfinite(vals)]
    sde_mean, sde_se = float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(vals.size))
    theta_end = jnp.mean(ens.final, axis=0)
    d = theta_end.shape[0]
    if d <= 200:
        lam = float(np.linalg.eigvalsh(np.asarray(problem.hessian(theta_end))).max())
    else:
        from ._curvature import hessian_eigs

        lam = float(hessian_eigs(problem, theta_end, 1, key=jr.fold_in(key, 20_000))[0][0])
    z = (sweep.mean - sde_mean) / np.sqrt(sweep.se**2 + sde_se**2)
    return LinearRuleBreakdown(sweep=sweep, sde_mean=sde_mean, sde_se=sde_se, lambda_max=lam,
                               kappa_max=2.0 / (float(lr) * lam), z=z)


register_result(QuadraticRuleLoss)
register_result(ScalingSweep)
register_result(LinearRuleBreakdown)


__all__ = [
    "linear_scaling_rule",
    "sqrt_scaling_rule",
    "linear_rule_quadratic",
    "scaling_rule_sweep",
    "linear_rule_breakdown",
    "QuadraticRuleLoss",
    "ScalingSweep",
    "LinearRuleBreakdown",
]
