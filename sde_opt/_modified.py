"""Modified equations: the flows that gradient descent and SGD follow to second order.

* **GD** (Barrett & Dherin 2021, implicit gradient regularisation): the iterates of
  ``θ ← θ − lr ∇L`` follow the flow of ``L + (lr/4)‖∇L‖²`` with global error O(lr²), where
  plain gradient flow has O(lr). That flow is :class:`sde_opt.ModifiedFlow`.
* **SGD with random reshuffling** (Smith, Dherin, Barrett & De 2021): the *mean* iterate,
  over the order of the batches, follows the flow of

      L_SGD = L + (lr/4)·(1/m) Σₖ ‖∇L̂ₖ‖²
            = L + (lr/4)·‖∇L‖² + (lr/4)·(N − B)/((N − 1)B) · tr D(θ)   (expected over partitions)

  (``m = N/B`` batches per epoch, ``L̂ₖ`` the batch losses, ``D`` the per-example gradient
  covariance): the implicit regulariser gains a *batch term* that penalises the
  mini-batch gradient variance. Within an epoch the noise sums to zero, so the spread of
  the iterates is O(lr^{3/2}) and the mean tracks ``L_SGD``'s flow to O(lr²), while GD's
  modified flow (no batch term) and gradient flow are O(lr) away. This is
  :class:`SGDModifiedFlow` (``replacement=False``); its counterpart is
  :class:`sde_opt.ShuffledSGD`.
  For i.i.d. batches the mean picks up no deterministic batch term at this order (the
  noise's effect is diffusive, O(lr) through ``∇³L``): use the second-order SDE
  ``so.SGDSDE(..., order=2)`` there.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import check_batch, positive
from ._dynamics import GD, AbstractContinuous, GradientFlow, ModifiedFlow, ShuffledSGD
from ._diffrax import flow_path
from ._engine import simulate
from ._fit import power_law_exponent
from ._io import register_result
from ._noise import batch_factor
from ._problem import Problem


def _trace_d(problem: Problem, theta):
    """``tr D(θ) = (1/N) Σ ‖∇fᵢ‖² − ‖∇L‖²``."""
    g = problem.per_example_grads(theta)
    gbar = jnp.mean(g, axis=0)
    return jnp.mean(jnp.sum(g * g, axis=1)) - gbar @ gbar


def modified_loss(problem: Problem, lr, batch_size=None, *, replacement: bool = False) -> Problem:
    """The modified loss whose gradient flow GD (``batch_size=None``) or SGD with random
    reshuffling (``batch_size=B``) follows to second order:

        L̃(θ) = L + (lr/4)‖∇L‖² + (lr/4)·c·tr D(θ),   c = (N − B)/((N − 1)B)

    (``c = 1/B`` with ``replacement=True``, the i.i.d. analogue of the batch term). Returns a
    data-free :class:`sde_opt.Problem`; ``so.GradientFlow(modified_loss(...))`` is the
    modified flow.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
        >>> round(float(so.optimizers.modified_loss(prob, 0.1).loss(jnp.ones(2))), 4)   # 2.5 + 0.025·17
        2.925
    """
    lr = positive("lr", lr)
    if batch_size is None:
        scale = 0.0
    else:
        problem._need_data("the batch term of modified_loss")
        b = check_batch(problem, batch_size, required=True)
        scale = batch_factor(problem.n_examples, b, replacement)

    def loss(theta):
        g = problem.grad(theta)
        out = problem.loss(theta) + 0.25 * lr * (g @ g)
        if batch_size is not None:
            out = out + 0.25 * lr * scale * _trace_d(problem, theta)
        return out

    info = {"dim": problem.dim} if problem.dim is not None else {}
    return Problem(loss, info=info, name=f"modified_{problem.name}")


class SGDModifiedFlow(AbstractContinuous):
    """The modified flow of SGD with random reshuffling (Smith et al. 2021):
    ``dθ/dt = −∇L − (lr/2)∇²L∇L − (lr/4)·c·∇tr D(θ)``, the gradient flow of
    :func:`modified_loss` with the batch term, ``c = (N − B)/((N − 1)B)``. The mean of
    :class:`sde_opt.ShuffledSGD` follows it to O(lr²) at epoch ends.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.problems.linear_regression(key=jr.key(0), n_examples=8, dim=2)
        >>> flow = so.optimizers.SGDModifiedFlow(prob, lr=0.1, batch_size=2)
        >>> so.simulate(flow, jnp.zeros(2), key=jr.key(0), n_paths=1, n_steps=10, dt=0.01).ys.shape
        (1, 11, 2)
    """

    problem: Problem
    lr: Float[Array, ""]
    batch_size: int = eqx.field(static=True)
    replacement: bool = eqx.field(static=True)

    def __init__(self, problem: Problem, lr, batch_size, *, replacement: bool = False):
        problem._need_data("SGDModifiedFlow")
        self.problem = problem
        self.lr = positive("lr", lr)
        self.batch_size = check_batch(problem, batch_size, required=True)
        self.replacement = bool(replacement)

    def natural_dt(self):
        return None

    def drift(self, t, theta):
        g = self.problem.grad(theta)
        c = batch_factor(self.problem.n_examples, self.batch_size, self.replacement)
        batch = jax.grad(lambda th: _trace_d(self.problem, th))(theta)
        return -g - 0.5 * self.lr * self.problem.hvp(theta, g) - 0.25 * self.lr * c * batch

    def diffusion_apply(self, t, theta, z):
        return jnp.zeros_like(theta)

    def n_normals(self, dim):
        return 0


# ----------------------------------------------------------------------------- experiments


def _flow_at(flow, theta0, t1):
    """The flow at ``t1`` by the reference solver (:func:`~sde_opt._diffrax.flow_path`, as
    :func:`sde_opt.stability.gradient_flow_path`), at tolerances far below the differences measured."""
    eps = float(jnp.finfo(jnp.asarray(theta0).dtype).eps)
    rtol = max(1e-10, 10 * eps)
    ys, _, _ = flow_path(flow, jnp.asarray(theta0), jnp.array([0.0, t1]), rtol=rtol, atol=rtol * 1e-2)
    return np.asarray(ys[-1])


def _steps(t1, lr, multiple: int = 1) -> int:
    k = int(round(t1 / lr))
    if abs(k * lr - t1) > 1e-9 * max(1.0, t1) or k % multiple:
        raise ValueError(
            f"t1={t1:g} must be a whole number of steps of lr={lr:g}"
            + (f" and of epochs ({multiple} steps each)" if multiple > 1 else "") + "; adjust t1 or lrs."
        )
    return k


class GDFlowErrors(eqx.Module):
    """GD's distance at ``t1`` from the gradient flow (``err_flow``) and from the modified
    flow (``err_modified``) per ``lr`` in ``lrs``, with the fitted log–log slopes (theory: 1, 2)."""

    lrs: np.ndarray
    err_flow: np.ndarray
    err_modified: np.ndarray
    slope_flow: float
    slope_modified: float


class SGDFlowErrors(eqx.Module):
    """The distance of SGD's mean iterate at ``t1`` from gradient flow (``err_flow``), GD's
    modified flow (``err_gd_modified``) and SGD's (``err_sgd_modified``) per ``lr``, the
    Euclidean standard error ``se`` of the mean iterate and the fitted slopes (theory: 1, 1, 2)."""

    lrs: np.ndarray
    se: np.ndarray
    err_flow: np.ndarray
    err_gd_modified: np.ndarray
    err_sgd_modified: np.ndarray
    slope_flow: float
    slope_gd_modified: float
    slope_sgd_modified: float


def gd_modified_flow_errors(problem: Problem, y0, lrs, t1) -> GDFlowErrors:
    """GD against gradient flow and against the modified flow of ``L + (lr/4)‖∇L‖²``, at
    time ``t1`` (``t1/lr`` GD steps from ``theta0``; a whole number for each ``lr``).

    The flows are solved by the reference solver of :func:`sde_opt.stability.gradient_flow_path`
    (adaptive Tsit5, ``rtol = max(1e-10, 10 eps)``), far more accurately than the
    differences measured (see :class:`GDFlowErrors`).

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> res = so.experiments.gd_modified_flow_errors(so.landscapes.x_plus_sin(), jnp.array([2.5]),
        ...                                  [0.1, 0.05, 0.025], t1=2.0)
        >>> round(res.slope_flow), round(res.slope_modified)
        (1, 2)
    """
    lrs = [float(lr) for lr in lrs]
    y0 = jnp.asarray(y0)
    ref_flow = _flow_at(GradientFlow(problem), y0, t1)
    e_flow, e_mod = [], []
    for lr in lrs:
        k = _steps(t1, lr)
        gd = simulate(GD(problem, lr), y0, key=jax.random.key(0), n_paths=1, n_steps=k, save_every=k)
        x = np.asarray(gd.ys[0, -1])
        e_flow.append(float(np.linalg.norm(x - ref_flow)))
        e_mod.append(float(np.linalg.norm(x - _flow_at(ModifiedFlow(problem, lr), y0, t1))))
    return GDFlowErrors(lrs=np.array(lrs), err_flow=np.array(e_flow), err_modified=np.array(e_mod),
                        slope_flow=power_law_exponent(lrs, e_flow), slope_modified=power_law_exponent(lrs, e_mod))


def sgd_modified_flow_errors(problem: Problem, y0, lrs, batch_size, t1, *, key,
                             n_paths: int = 1000) -> SGDFlowErrors:
    """The mean of SGD with random reshuffling (:class:`sde_opt.ShuffledSGD`) at time
    ``t1`` (a whole number of epochs for every ``lr``) against gradient flow, GD's modified
    flow, and :class:`SGDModifiedFlow` (with the batch term).

    See :class:`SGDFlowErrors`.
    """
    lrs = [float(lr) for lr in lrs]
    y0 = jnp.asarray(y0)
    m = problem.n_examples // batch_size
    ref_flow = _flow_at(GradientFlow(problem), y0, t1)
    out = {"flow": [], "gd_modified": [], "sgd_modified": []}
    ses = []
    for i, lr in enumerate(lrs):
        k = _steps(t1, lr, m)
        ens = simulate(ShuffledSGD(problem, lr, batch_size), y0, key=jax.random.fold_in(key, i), n_paths=n_paths,
                       n_steps=k, save_every=k)
        final = np.asarray(ens.final)
        mean = final.mean(axis=0)
        ses.append(float(np.linalg.norm(final.std(axis=0, ddof=1)) / np.sqrt(n_paths)))
        out["flow"].append(float(np.linalg.norm(mean - ref_flow)))
        out["gd_modified"].append(float(np.linalg.norm(mean - _flow_at(ModifiedFlow(problem, lr), y0, t1))))
        sgd_flow = SGDModifiedFlow(problem, lr, batch_size)
        out["sgd_modified"].append(float(np.linalg.norm(mean - _flow_at(sgd_flow, y0, t1))))
    return SGDFlowErrors(
        lrs=np.array(lrs), se=np.array(ses), err_flow=np.array(out["flow"]), err_gd_modified=np.array(out["gd_modified"]),
        err_sgd_modified=np.array(out["sgd_modified"]), slope_flow=power_law_exponent(lrs, out["flow"]),
        slope_gd_modified=power_law_exponent(lrs, out["gd_modified"]),
        slope_sgd_modified=power_law_exponent(lrs, out["sgd_modified"]),
    )


register_result(GDFlowErrors)
register_result(SGDFlowErrors)


__all__ = ["modified_loss", "SGDModifiedFlow", "GDFlowErrors", "SGDFlowErrors", "gd_modified_flow_errors",
           "sgd_modified_flow_errors"]
