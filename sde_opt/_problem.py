"""What is optimised: a loss on flat parameter vectors, optionally a finite sum over data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import is_concrete


def _leading_size(data) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data is an empty pytree; pass data=None for a loss without examples.")
    sizes = {int(jnp.shape(x)[0]) if jnp.ndim(x) > 0 else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"every leaf of data must share the leading (example) axis; got leading sizes {sorted(sizes)}. "
            "Stack the examples along axis 0 of each array."
        )
    return sizes.pop()


class Problem(eqx.Module):
    """A differentiable objective on flat parameter vectors ``(d,)``.

    ``loss_fn(params, example) -> scalar`` when ``data`` (a pytree whose leaves share a
    leading axis of ``N`` examples) is given, and the loss is the mean
    ``L(θ) = (1/N) Σᵢ fᵢ(θ)``; otherwise ``loss_fn(params) -> scalar``.

    Parameters may be a pytree: pass ``params`` (an example pytree, e.g. the initial
    weights). It is raveled once here; every method of ``Problem`` takes and returns flat
    vectors, and ``problem.unravel(theta)`` rebuilds the pytree. ``problem.theta0`` is the
    flat example (``None`` when no pytree was given).

    ``info`` carries known facts about the landscape (minima, Hessians, barriers) as a dict
    of arrays, used by tests and analyses; it is empty for user problems.

    Example:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> p = so.Problem(lambda th, ex: 0.5 * (ex["x"] @ th - ex["y"]) ** 2,
        ...                data={"x": jnp.ones((4, 2)), "y": jnp.zeros(4)})
        >>> p.per_example_grads(jnp.ones(2)).shape
        (4, 2)
    """

    loss_fn: Callable = eqx.field(static=True)
    data: Any = None
    theta0: Float[Array, " d"] | None = None
    info: dict = eqx.field(default_factory=dict)
    unravel: Callable = eqx.field(static=True, default=None)
    name: str = eqx.field(static=True, default="problem")

    def __init__(self, loss_fn: Callable, data=None, *, params=None, info=None, name: str = "problem"):
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
        if data is not None:
            data = jax.tree_util.tree_map(jnp.asarray, data)
            _leading_size(data)
        self.data = data
        self.info = {} if info is None else dict(info)
        self.name = name
        self.loss_fn = loss_fn
        self.theta0, self.unravel = (None, None) if params is None else jfu.ravel_pytree(params)

    # ------------------------------------------------------------------ basics
    @property
    def n_examples(self) -> int | None:
        """Number of examples ``N`` (``None`` for a loss without data)."""
        return None if self.data is None else _leading_size(self.data)

    @property
    def dim(self) -> int | None:
        """Parameter dimension ``d`` when known (from ``params`` or ``info``)."""
        if self.theta0 is not None:
            return int(self.theta0.shape[0])
        if "dim" in self.info:
            return int(self.info["dim"])
        return None

    def _params(self, theta):
        return theta if self.unravel is None else self.unravel(theta)

    def example_loss(self, theta: Float[Array, " d"], example) -> Float[Array, ""]:
        """Loss of one example ``fᵢ(θ)``."""
        out = self.loss_fn(self._params(theta), example)
        return _scalar(out)

    def check_params(self, theta, name: str = "params") -> Float[Array, " d"]:
        """Validate a flat parameter vector; returns it as an array."""
        theta = jnp.asarray(theta)
        if theta.ndim != 1:
            raise ValueError(
                f"{name} must be a flat vector of shape (d,), got shape {theta.shape}; "
                "ravel pytrees with Problem(..., params=tree) and problem.theta0."
            )
        d = self.dim
        if d is not None and theta.shape[0] != d:
            raise ValueError(f"{name} has {theta.shape[0]} entries but the problem has d={d} parameters.")
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point, got dtype {theta.dtype}.")
        if is_concrete(theta) and not bool(jnp.all(jnp.isfinite(theta))):
            raise ValueError(f"{name} contains non-finite values (nan or inf); start from a finite point.")
        jax.eval_shape(self.loss, theta)  # raises a ValueError if the loss is not scalar
        return theta

    def loss(self, theta: Float[Array, " d"]) -> Float[Array, ""]:
        """``L(θ)``: the mean of the per-example losses, or ``loss_fn(θ)``."""
        if self.data is None:
            return _scalar(self.loss_fn(self._params(theta)))
        return jnp.mean(self.per_example_losses(theta))

    def per_example_losses(self, theta: Float[Array, " d"]) -> Float[Array, " n"]:
        self._need_data("per_example_losses")
        return jax.vmap(self.example_loss, in_axes=(None, 0))(theta, self.data)

    def grad(self, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """``∇L(θ)``."""
        return jax.grad(self.loss)(theta)

    def hvp(self, theta: Float[Array, " d"], v: Float[Array, " d"]) -> Float[Array, " d"]:
        """Hessian-vector product ``∇²L(θ) v`` by forward-over-reverse."""
        return jax.jvp(self.grad, (theta,), (v,))[1]

    def hessian(self, theta: Float[Array, " d"]) -> Float[Array, "d d"]:
        """Dense Hessian from ``d`` HVPs (small problems only: d×d memory)."""
        d = theta.shape[0]
        if d > 5000:
            raise ValueError(f"hessian() forms a d×d matrix and d={d} is too large; use hvp() or hessian_eigs().")
        h = jax.vmap(lambda v: self.hvp(theta, v))(jnp.eye(d, dtype=theta.dtype))
        return 0.5 * (h + h.T)

    def per_example_grads(self, theta: Float[Array, " d"]) -> Float[Array, "n d"]:
        """``∇fᵢ(θ)`` for every example, by ``vmap(grad)``."""
        self._need_data("per_example_grads")
        return jax.vmap(jax.grad(self.example_loss), in_axes=(None, 0))(theta, self.data)

    def batch_grad(self, theta: Float[Array, " d"], idx) -> Float[Array, " d"]:
        """Mini-batch gradient ``(1/B) Σ_{i∈idx} ∇fᵢ(θ)`` for integer indices ``idx`` (B,)."""
        self._need_data("batch_grad")
        batch = jax.tree_util.tree_map(lambda x: x[idx], self.data)
        f = lambda th: jnp.mean(jax.vmap(self.example_loss, in_axes=(None, 0))(th, batch))
        return jax.grad(f)(theta)

    def _need_data(self, what: str):
        if self.data is None:
            raise ValueError(
                f"{what} needs a finite-sum problem; construct Problem(loss_fn, data=...) with "
                "loss_fn(params, example)."
            )


def _scalar(out):
    out = jnp.asarray(out)
    if out.shape != ():
        raise ValueError(
            f"loss_fn must return a scalar, got shape {out.shape}; reduce it (e.g. jnp.sum or jnp.mean)."
        )
    return out

