"""What is optimised: a loss on flat parameter vectors, optionally a finite sum over data."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import all_finite
from ._chunking import map_examples, speed_chunk_size, sum_examples


def as_flat(theta, name: str = "theta"):
    """``theta`` as a real floating array (integers and booleans converted); a pytree or a
    complex array is a ``ValueError`` naming ``name``."""
    if isinstance(theta, dict) or isinstance(theta, (list, tuple)) and any(
            np.ndim(x) > 0 for x in jax.tree_util.tree_leaves(theta)):
        raise ValueError(
            f"{name} must be a flat vector of shape (d,), got a {type(theta).__name__} pytree; flatten it as "
            "Problem(..., params=tree) does, jax.flatten_util.ravel_pytree(tree)[0], in the order of problem.theta0."
        )
    try:
        theta = jnp.asarray(theta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a flat vector of shape (d,), got {type(theta).__name__}: {err}") from None
    if jnp.issubdtype(theta.dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {theta.dtype}.")
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    return theta


def _check_finite_data(data) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(data)[0]:
        if jnp.issubdtype(x.dtype, jnp.inexact) and not all_finite(x):
            raise ValueError(f"data{jax.tree_util.keystr(path)} contains non-finite values (nan or inf); "
                             "clean or drop those examples (for missing values, pass a 0/1 mask array and "
                             "select with jnp.where in the loss).")


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


def _is_nnx_module(params) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(params, nnx.Module)


def _is_linen_variables(params) -> bool:
    return (isinstance(params, Mapping) and "params" in params
            and all(isinstance(v, Mapping) for k, v in params.items() if k != "params"))


def _is_numeric_leaf(x) -> bool:
    return isinstance(x, (int, float, complex, np.ndarray, np.generic, jax.Array)) and not isinstance(x, bool)


def _split_model(params):
    """``(trainable, state, rebuild)``: the pytree raveled into ``θ``, the model state held
    fixed (arrays), and ``rebuild(trainable, state)`` -> what ``loss_fn`` receives (``None``
    when that is the trainable pytree itself)."""
    if _is_nnx_module(params):
        from flax import nnx

        graphdef, trainable, state = nnx.split(params, nnx.Param, ...)
        return trainable, state, lambda p, s: nnx.merge(graphdef, p, s)
    if _is_linen_variables(params):
        state = {k: v for k, v in params.items() if k != "params"}
        return params["params"], state, lambda p, s: {"params": p, **s}
    leaves = jax.tree_util.tree_leaves(params)
    if not isinstance(params, eqx.Module) and all(_is_numeric_leaf(x) for x in leaves):
        return params, None, None
    trainable, static = eqx.partition(params, eqx.is_inexact_array)
    state, static = eqx.partition(static, eqx.is_array)
    if not jax.tree_util.tree_leaves(state):
        state = None
    return trainable, state, lambda p, s: eqx.combine(p, static) if s is None else eqx.combine(p, s, static)


class Problem(eqx.Module):
    r"""A differentiable objective on flat parameter vectors ``(d,)``.

    ``loss_fn(params, example) -> scalar`` when ``data`` (a pytree whose leaves share a
    leading axis of ``N`` examples) is given, and the loss is the mean
    ``L(θ) = (1/N) Σᵢ fᵢ(θ)``; otherwise ``loss_fn(params) -> scalar``.

    **Parameters and models.** ``params`` is an example of what ``loss_fn`` takes (e.g. the
    initial weights); it is raveled once here into the flat ``θ`` (``problem.theta0``), and
    every method takes and returns flat vectors. Accepted:

    - a plain pytree of arrays (all of it is ``θ``);
    - an Equinox module: its floating-point arrays are ``θ``; other arrays are model state
      held fixed, and non-array leaves (activation functions, flags) stay static, as
      ``eqx.partition(model, eqx.is_inexact_array)`` does. ``loss_fn(model, example)``
      receives the rebuilt module. For ``eqx.nn.BatchNorm``/``Dropout`` pass
      ``eqx.nn.inference_mode(model)`` and close over the ``eqx.nn.State``.
    - a Flax linen variables dict ``{"params": ..., "batch_stats": ...}``: only the
      ``"params"`` collection is ``θ``; the other collections are model state held in the
      problem (``problem.state``), and ``loss_fn(variables, example)`` receives the full dict,
      e.g. ``model.apply(variables, x, train=False)``;
    - a Flax nnx module: ``nnx.split(model, nnx.Param, ...)``; the ``nnx.Param`` variables
      are ``θ``, the rest (BatchNorm statistics, RNG counts) is state, and ``loss_fn`` receives
      ``nnx.merge(...)`` of both. Call ``model.eval()`` first for BatchNorm/Dropout.

    ``problem.unravel(θ)`` rebuilds the trainable pytree, ``problem.model(θ)`` what
    ``loss_fn`` receives.

    **BatchNorm.** With running statistics fixed (evaluation mode) every example's loss
    ``fᵢ(θ)`` depends on that example only, so ``L = (1/N) Σᵢ fᵢ`` is an honest finite sum
    and the curvature (``∇²L``, Gauss–Newton, Fisher) and noise (``D = (1/N) Σ ∇fᵢ∇fᵢᵀ −
    ∇L∇Lᵀ``) statements hold for the evaluation-mode network. Training-mode batch
    statistics (the mini-batch's own) make ``f`` depend on the whole batch, so that network is
    not a finite sum over examples. For the discrete optimizers (``SGD``, ``OptaxDynamics``
    and everything that calls ``batch_grad``) pass ``batch_loss_fn(model, batch) -> scalar``,
    the mean loss of a mini-batch in training mode (e.g. linen
    ``model.apply(variables, batch["x"], train=True, mutable=["batch_stats"])``, the
    updates discarded): ``batch_grad`` then differentiates it on the whole batch (no
    chunking: the batch statistics need all of it), so SGD steps with the batch's own
    statistics, while the running statistics in ``problem.state`` stay fixed (they are not
    updated along a path). Then ``E[g_B] ≠ ∇L`` in general, and the SDE's ``D/B`` describes
    the evaluation-mode network only.

    **Dropout.** With ``batch_key=True`` the training-mode loss takes a key,
    ``batch_loss_fn(model, batch, key) -> scalar`` (dropout masks drawn from ``key``, e.g.
    linen ``rngs={"dropout": key}``, Equinox ``model(x, key=key)``), and ``batch_grad(θ, idx,
    key)`` needs one. The discrete optimizers give every step of every path its own key,
    ``fold_in(step key, DROPOUT_STREAM)`` (independent of the key that draws the batch, so the
    batches are those of the same run without dropout). ``loss_fn`` (the finite sum, the
    curvature, the noise models and the SDE) stays the deterministic evaluation network.

    **Chunks.** With ``chunk_size=c`` the loss, gradient, HVP, per-example losses and
    gradients, mini-batch gradients, the per-example VJP/JVP and the curvature and noise
    operators built on them stream over the examples ``c`` at a time (the last chunk padded
    with masked examples): peak memory is set by ``c``, not by ``N``. Results equal the
    unchunked ones to float rounding. ``chunk_size=None`` asks for no memory bound and takes
    the faster choice: all examples at once, except on the CPU backend for a model with a
    convolution and ``N > 128``, which streams in chunks of about 128 (at most 16 chunks;
    ``problem.chunk_size`` shows the choice), because there a convolution over thousands of
    images spills the caches (a CNN's gradient and HVP ran 1.7–2× faster in chunks; see
    ``sde_opt._chunking.speed_chunk_size``). ``chunk_size=N`` forces one chunk.

    **jit.** ``jax.jit(problem.grad)`` (any method) works: a problem hashes by identity, so
    its arrays are constants of that compilation. To trace the data as arguments instead
    (no recompile for a new problem of the same shapes), use ``eqx.filter_jit`` and pass
    the problem as an argument.

    ``info`` carries known facts about the landscape (minima, Hessians, barriers) as a dict
    of arrays, used by tests and analyses; it is empty for user problems.

    Examples:
        >>> import jax.numpy as jnp, sde_opt as so
        >>> p = so.Problem(lambda th, ex: 0.5 * (ex["x"] @ th - ex["y"]) ** 2,
        ...                data={"x": jnp.ones((4, 2)), "y": jnp.zeros(4)}, chunk_size=3)
        >>> p.per_example_grads(jnp.ones(2)).shape
        (4, 2)

        An Equinox module as it is written (its activation stays static):

        >>> import equinox as eqx, jax, jax.random as jr
        >>> mlp = eqx.nn.MLP(2, 1, 8, 1, key=jr.key(0))
        >>> data = {"x": jnp.ones((4, 2)), "y": jnp.zeros(4)}
        >>> prob = so.Problem(lambda m, ex: (m(ex["x"])[0] - ex["y"]) ** 2, data, params=mlp)
        >>> jax.jit(prob.grad)(prob.theta0).shape
        (33,)

        Flax linen with BatchNorm (evaluation mode for the finite sum, training mode for SGD)::

            variables = net.init(key, x[:1])        # {"params": ..., "batch_stats": ...}
            loss = lambda v, ex: xent(net.apply(v, ex["x"][None], train=False)[0], ex["y"])
            def batch_loss(v, batch):
                out, _ = net.apply(v, batch["x"], train=True, mutable=["batch_stats"])
                return jnp.mean(jax.vmap(xent)(out, batch["y"]))
            prob = so.Problem(loss, data, params=variables, chunk_size=256, batch_loss_fn=batch_loss)

        Flax nnx: ``model.eval()``, then ``so.Problem(lambda m, ex: ..., data, params=model)``;
        ``loss_fn`` receives the merged module.
    """

    loss_fn: Callable = eqx.field(static=True)
    data: Any = None
    theta0: Float[Array, " d"] | None = None
    info: dict = eqx.field(default_factory=dict)
    unravel: Callable = eqx.field(static=True, default=None)
    name: str = eqx.field(static=True, default="problem")
    state: Any = None
    chunk_size: int | None = eqx.field(static=True, default=None)
    _rebuild: Callable | None = eqx.field(static=True, default=None)
    batch_loss_fn: Callable | None = eqx.field(static=True, default=None)
    batch_key: bool = eqx.field(static=True, default=False)

    def __init__(self, loss_fn: Callable, data=None, *, params=None, chunk_size: int | None = None, info=None,
                 name: str = "problem", batch_loss_fn: Callable | None = None, batch_key: bool = False):
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
        if batch_loss_fn is not None and (not callable(batch_loss_fn) or data is None):
            raise ValueError("batch_loss_fn must be a callable batch_loss_fn(model, batch) -> scalar on a problem "
                             "with data; pass data=... or batch_loss_fn=None.")
        if not isinstance(batch_key, bool) or (batch_key and batch_loss_fn is None):
            raise ValueError("batch_key=True says batch_loss_fn(model, batch, key) takes a key (dropout); pass a "
                             f"batch_loss_fn with it, or batch_key=False (got batch_key={batch_key!r}).")
        self.batch_loss_fn = batch_loss_fn
        self.batch_key = batch_key
        if data is not None:
            data = jax.tree_util.tree_map(jnp.asarray, data)
            _leading_size(data)
            _check_finite_data(data)
        if chunk_size is not None:
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
                raise ValueError(f"chunk_size must be a positive integer (examples per chunk) or None, got {chunk_size!r}.")
            if data is None:
                raise ValueError("chunk_size streams over the examples and needs data; pass data=... or chunk_size=None.")
            chunk_size = int(chunk_size)
        self.data = data
        self.chunk_size = chunk_size
        self.info = {} if info is None else dict(info)
        self.name = name
        self.loss_fn = loss_fn
        if params is None:
            self.theta0, self.unravel, self.state, self._rebuild = None, None, None, None
        else:
            trainable, self.state, self._rebuild = _split_model(params)
            if not jax.tree_util.tree_leaves(trainable):
                raise ValueError(
                    f"params ({type(params).__name__}) has no floating-point arrays to optimise; pass the model "
                    "or pytree of weights (float arrays)."
                )
            self.theta0, self.unravel = jfu.ravel_pytree(trainable)
            if chunk_size is None and data is not None:  # no memory bound asked: the faster streaming
                first = jax.tree_util.tree_map(lambda x: x[0], data)
                chunk_size = speed_chunk_size(lambda th, ex: self.loss_fn(self._params(th), ex), self.theta0, first,
                                              _leading_size(data))
                self.chunk_size = chunk_size

    # a problem holds arrays and dicts, which do not hash: hash by identity so that
    # jax.jit(problem.method) works (the arrays become constants of that compilation)
    def __hash__(self):
        return id(self)

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
        if self.unravel is None:
            return theta
        tree = self.unravel(theta)
        return tree if self._rebuild is None else self._rebuild(tree, self.state)

    def model(self, theta: Float[Array, " d"]):
        """What ``loss_fn`` receives at ``θ``: the rebuilt module / variables / pytree."""
        return self._params(theta)

    def example_loss(self, theta: Float[Array, " d"], example) -> Float[Array, ""]:
        """Loss of one example ``fᵢ(θ)``."""
        out = self.loss_fn(self._params(theta), example)
        return _scalar(out)

    def check_params(self, theta, name: str = "params") -> Float[Array, " d"]:
        """Validate a flat parameter vector; returns it as an array."""
        theta = as_flat(theta, name)
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
        if not all_finite(theta):
            raise ValueError(f"{name} contains non-finite values (nan or inf); start from a finite point.")
        # raises a ValueError if the loss is not scalar. A fresh closure, not the bound method:
        # jax caches on the function, and equinox compares bound methods leaf by leaf, which
        # fails when the problem's data are tracers (a problem built inside vmap)
        jax.eval_shape(lambda th: self.loss(th), theta)
        return theta

    # ------------------------------------------------------------------ streaming
    def chunk_losses(self, theta: Float[Array, " d"], chunk) -> Float[Array, " c"]:
        """``fᵢ(θ)`` for the examples of ``chunk`` (a pytree with a leading example axis)."""
        return jax.vmap(self.example_loss, in_axes=(None, 0))(theta, chunk)

    def stream(self, fn: Callable, weights=None):
        """``Σ_chunks fn(chunk, w)`` over the data in chunks of ``chunk_size`` (one chunk
        when it is ``None``); ``w`` are the per-example ``weights`` of the chunk (default
        ``1/N``), zero on the padding. ``fn`` must be linear in ``w`` (``Σᵢ wᵢ(...)ᵢ``)."""
        self._need_data("stream")
        n = self.n_examples
        if weights is None:
            weights = jnp.full((n,), 1.0 / n, dtype=jnp.result_type(float))
        return sum_examples(fn, self.data, weights, self.chunk_size)

    def _weighted_grad(self, theta, chunk, w):
        return jax.grad(lambda th: jnp.vdot(w.astype(th.dtype), self.chunk_losses(th, chunk)))(theta)

    # ------------------------------------------------------------------ the finite sum
    def loss(self, theta: Float[Array, " d"]) -> Float[Array, ""]:
        """``L(θ)``: the mean of the per-example losses, or ``loss_fn(θ)``."""
        if self.data is None:
            return _scalar(self.loss_fn(self._params(theta)))
        if self.chunk_size is None:
            return jnp.mean(self.per_example_losses(theta))
        return self.stream(lambda ch, w: jnp.vdot(w.astype(theta.dtype), self.chunk_losses(theta, ch)))

    def per_example_losses(self, theta: Float[Array, " d"]) -> Float[Array, " n"]:
        """``fᵢ(θ)`` for every example ``(N,)``."""
        self._need_data("per_example_losses")
        return map_examples(lambda ex: self.example_loss(theta, ex), self.data, self.chunk_size)

    def grad(self, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """``∇L(θ)`` (chunk by chunk when ``chunk_size`` is set)."""
        if self.data is None or self.chunk_size is None:
            return jax.grad(self.loss)(theta)
        return self.stream(lambda ch, w: self._weighted_grad(theta, ch, w))

    def hvp(self, theta: Float[Array, " d"], v: Float[Array, " d"]) -> Float[Array, " d"]:
        """Hessian-vector product ``∇²L(θ) v`` by forward-over-reverse."""
        if self.data is None or self.chunk_size is None:
            return jax.jvp(self.grad, (theta,), (v,))[1]
        return self.stream(lambda ch, w: jax.jvp(lambda th: self._weighted_grad(th, ch, w), (theta,), (v,))[1])

    def hessian(self, theta: Float[Array, " d"]) -> Float[Array, "d d"]:
        """Dense Hessian from ``d`` HVPs (small problems only: d×d memory)."""
        d = theta.shape[0]
        if d > 5000:
            raise ValueError(f"hessian() forms a d×d matrix and d={d} is too large; use hvp() or hessian_eigs().")
        h = jax.vmap(lambda v: self.hvp(theta, v))(jnp.eye(d, dtype=theta.dtype))
        return 0.5 * (h + h.T)

    def per_example_grads(self, theta: Float[Array, " d"]) -> Float[Array, "n d"]:
        """``∇fᵢ(θ)`` for every example, by ``vmap(grad)`` (``chunk_size`` at a time)."""
        self._need_data("per_example_grads")
        g = jax.grad(self.example_loss)
        return map_examples(lambda ex: g(theta, ex), self.data, self.chunk_size)

    def per_example_vjp(self, theta: Float[Array, " d"], cotangent: Float[Array, " n"]) -> Float[Array, " d"]:
        """``Jᵀc = Σᵢ cᵢ ∇fᵢ(θ)`` for a cotangent ``c`` on the examples, as one reverse-mode
        pass of ``θ ↦ Σᵢ cᵢ fᵢ(θ)`` (about one gradient, O(d) memory; never the ``N × d``
        Jacobian ``J``)."""
        self._need_data("per_example_vjp")
        c = jnp.asarray(cotangent)
        if c.shape != (self.n_examples,):
            raise ValueError(f"cotangent must have shape (n_examples,) = ({self.n_examples},), got {c.shape}.")
        return self.stream(lambda ch, w: self._weighted_grad(theta, ch, w), c)

    def per_example_jvp(self, theta: Float[Array, " d"], v: Float[Array, " d"]) -> Float[Array, " n"]:
        """``J v = (∇fᵢ(θ)·v)ᵢ`` ``(N,)`` by forward mode, without the ``N × d`` Jacobian."""
        self._need_data("per_example_jvp")
        return map_examples(lambda ex: jax.jvp(lambda th: self.example_loss(th, ex), (theta,), (v,))[1],
                            self.data, self.chunk_size)

    def batch_grad(self, theta: Float[Array, " d"], idx, key=None) -> Float[Array, " d"]:
        """Mini-batch gradient ``(1/B) Σ_{i∈idx} ∇fᵢ(θ)`` for integer indices ``idx`` (B,);
        with ``batch_loss_fn``, ``∇ batch_loss_fn(model(θ), batch)`` (training mode), and
        ``∇ batch_loss_fn(model(θ), batch, key)`` when the problem has ``batch_key=True``
        (dropout; ``key`` is then required, and ignored otherwise)."""
        self._need_data("batch_grad")
        batch = jax.tree_util.tree_map(lambda x: x[idx], self.data)
        b = jnp.shape(idx)[0]
        if self.batch_key:  # training mode with dropout: the masks come from key
            if key is None:
                raise ValueError("this problem's batch_loss_fn takes a key (batch_key=True, dropout); pass "
                                 "batch_grad(theta, idx, key).")
            return jax.grad(lambda th: _scalar(self.batch_loss_fn(self._params(th), batch, key)))(theta)
        if self.batch_loss_fn is not None:  # training mode: the batch's own statistics
            return jax.grad(lambda th: _scalar(self.batch_loss_fn(self._params(th), batch)))(theta)
        if self.chunk_size is not None and self.chunk_size < b:
            w = jnp.full((b,), 1.0 / b, dtype=theta.dtype)
            return sum_examples(lambda ch, wc: self._weighted_grad(theta, ch, wc), batch, w, self.chunk_size)
        f = lambda th: jnp.mean(jax.vmap(self.example_loss, in_axes=(None, 0))(th, batch))
        return jax.grad(f)(theta)

    def subset(self, idx) -> Problem:
        """The same problem on the examples ``idx`` (integer indices): a fixed sub-sample for
        sub-sampled curvature and noise estimates (``L_S = (1/|S|) Σ_{i∈S} fᵢ``); model,
        state and ``chunk_size`` are kept."""
        self._need_data("subset")
        idx = jnp.asarray(idx)
        if idx.ndim != 1 or not jnp.issubdtype(idx.dtype, jnp.integer) or idx.shape[0] == 0:
            raise ValueError(f"idx must be a non-empty vector of integer indices, got shape {idx.shape}, dtype {idx.dtype}.")
        return eqx.tree_at(lambda p: p.data, self, jax.tree_util.tree_map(lambda x: x[idx], self.data))

    def subsample(self, n: int, *, key) -> Problem:
        """:meth:`subset` on ``n`` distinct examples drawn uniformly with ``key``."""
        self._need_data("subsample")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= self.n_examples:
            raise ValueError(f"n must be an integer in [1, n_examples={self.n_examples}], got {n!r}.")
        return self.subset(jax.random.choice(key, self.n_examples, (int(n),), replace=False))

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

