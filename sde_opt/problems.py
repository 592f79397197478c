"""Finite-sum problems from data: synthetic regression and scikit-learn's bundled digits.

Every constructor returns a :class:`sde_opt.Problem` with ``data`` (leading axis ``N``) and
``theta0``, the flat initial parameters; ``problem.unravel`` rebuilds the pytree.
No data is downloaded: digits ships inside scikit-learn.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._checks import positive_int
from ._problem import Problem


def linear_regression(*, key, n_examples: int = 64, dim: int = 2, noise_std=0.5, l2=0.0) -> Problem:
    """Least squares ``fᵢ(θ) = ½(xᵢᵀθ − yᵢ)² + (l2/2)‖θ‖²`` on Gaussian features, with
    ``yᵢ = xᵢᵀθ_true + noise_std · εᵢ``. ``info`` holds the exact minimiser and Hessian."""
    n = positive_int("n_examples", n_examples)
    d = positive_int("dim", dim)
    if not (np.isfinite(float(noise_std)) and float(noise_std) >= 0):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}.")
    kx, kt, ke = jr.split(key, 3)
    x = jr.normal(kx, (n, d))
    theta_true = jr.normal(kt, (d,))
    y = x @ theta_true + noise_std * jr.normal(ke, (n,))
    lam = float(l2)
    if lam < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}.")

    def loss(theta, ex):
        return 0.5 * (ex["x"] @ theta - ex["y"]) ** 2 + 0.5 * lam * theta @ theta

    h = x.T @ x / n + lam * jnp.eye(d)
    minimum = jnp.linalg.solve(h, x.T @ y / n)
    info = {"dim": d, "minima": minimum[None], "hessians_min": h[None], "theta_true": theta_true}
    return Problem(loss, {"x": x, "y": y}, params=jnp.zeros(d), info=info, name="linear_regression")


def teacher_student(*, key, n_examples: int = 256, dim_in: int = 8, hidden: int = 16, teacher_hidden: int = 4,
                    noise_std=0.1) -> Problem:
    """Regression of a random two-layer tanh teacher by a two-layer tanh student (MSE)."""
    n = positive_int("n_examples", n_examples)
    kx, kt1, kt2, ke, ks = jr.split(key, 5)
    x = jr.normal(kx, (n, dim_in))
    w1 = jr.normal(kt1, (dim_in, teacher_hidden)) / np.sqrt(dim_in)
    w2 = jr.normal(kt2, (teacher_hidden,)) / np.sqrt(teacher_hidden)
    y = jnp.tanh(x @ w1) @ w2 + noise_std * jr.normal(ke, (n,))
    params = _mlp_init(ks, [dim_in, hidden, 1])

    def loss(p, ex):
        return 0.5 * (mlp_apply(p, ex["x"])[0] - ex["y"]) ** 2

    return Problem(loss, {"x": x, "y": y}, params=params, name="teacher_student")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = (ds.data / 16.0).astype(np.float32)
    x = x - x.mean(axis=0)
    return x, ds.target.astype(np.int32)


def digits(n_examples: int | None = None, n_classes: int = 10, *, key=None):
    """scikit-learn's bundled 8×8 digits (1,797 images): features ``(N, 64)`` scaled to
    [0, 1] and centred, integer labels ``(N,)``. A subset of ``n_examples`` is drawn with
    ``key`` (or the first ones without a key); ``n_classes`` keeps labels ``< n_classes``."""
    x, y = _digits_arrays()
    keep = y < positive_int("n_classes", n_classes, upper=10, upper_name="the 10 digit classes")
    x, y = x[keep], y[keep]
    if n_examples is not None:
        n = positive_int("n_examples", n_examples, upper=len(y), upper_name="the digits available")
        idx = np.asarray(jr.permutation(key, len(y))[:n]) if key is not None else np.arange(n)
        x, y = x[idx], y[idx]
    return jnp.asarray(x), jnp.asarray(y)


def logistic_regression_digits(*, n_examples: int | None = 512, n_classes: int = 10, l2=1e-3, key=None) -> Problem:
    """Multinomial logistic regression (softmax cross-entropy, ``l2`` weight decay) on digits."""
    x, y = digits(n_examples, n_classes, key=key)
    lam = float(l2)
    params = {"w": jnp.zeros((x.shape[1], n_classes)), "b": jnp.zeros(n_classes)}

    def loss(p, ex):
        logits = ex["x"] @ p["w"] + p["b"]
        return -jax.nn.log_softmax(logits)[ex["y"]] + 0.5 * lam * jnp.sum(p["w"] ** 2)

    return Problem(loss, {"x": x, "y": y}, params=params, name="logistic_regression_digits")


def _mlp_init(key, sizes):
    params = []
    for k, (m, n) in zip(jr.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append({"w": jr.normal(k, (m, n)) * np.sqrt(1.0 / m), "b": jnp.zeros(n)})
    return params


def mlp_apply(params, x):
    """The tanh MLP of :func:`mlp_digits`: ``params`` a list of ``{"w", "b"}`` layers, ``x`` ``(..., 64)``."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_digits(*, key, hidden=(32,), loss: str = "ce", n_examples: int | None = 512, n_classes: int = 10) -> Problem:
    """A tanh MLP classifier on digits with cross-entropy (``loss="ce"``) or squared error on
    one-hot targets (``loss="mse"``, as in the edge-of-stability experiments). ``key`` draws
    the initial weights (``problem.theta0``) and the subset of examples."""
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}.")
    k_data, k_init = jr.split(key)
    x, y = digits(n_examples, n_classes, key=k_data)
    sizes = [x.shape[1], *[positive_int("hidden", h) for h in hidden], n_classes]
    params = _mlp_init(k_init, sizes)

    if loss == "ce":
        def example_loss(p, ex):
            return -jax.nn.log_softmax(mlp_apply(p, ex["x"]))[ex["y"]]
    else:
        def example_loss(p, ex):
            out = mlp_apply(p, ex["x"])
            return 0.5 * jnp.sum((out - jax.nn.one_hot(ex["y"], n_classes)) ** 2)

    return Problem(example_loss, {"x": x, "y": y}, params=params, name=f"mlp_digits_{loss}")


def accuracy(problem: Problem, theta) -> float:
    """Classification accuracy of a digits problem at flat parameters ``theta``."""
    p = problem.unravel(theta)
    x, y = problem.data["x"], problem.data["y"]
    out = mlp_apply(p, x) if isinstance(p, list) else x @ p["w"] + p["b"]
    return float(jnp.mean(jnp.argmax(out, axis=-1) == y))


# the cache of the digits arrays, cleared by tests of offline loading
digits.cache_clear = _digits_arrays.cache_clear
