"""Argument checks shared by the public constructors: errors name the argument and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer), so it can be checked in Python."""
    return not isinstance(x, jax.core.Tracer)


def all_finite(x) -> bool:
    """True unless ``x`` holds values (not a tracer) and one is nan or inf. Checked in numpy,
    so it also works on concrete arrays closed over inside a traced function."""
    return not is_concrete(x) or bool(np.all(np.isfinite(np.asarray(x))))


def positive(name: str, value, *, hint: str = ""):
    """Return ``value`` as an array after checking it is a finite number > 0 (when concrete)."""
    arr = jnp.asarray(value, dtype=jnp.result_type(float))
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}.")
    if is_concrete(arr) and not (np.isfinite(float(arr)) and float(arr) > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}.{(' ' + hint) if hint else ''}")
    return arr


def positive_int(name: str, value, *, upper: int | None = None, upper_name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value} exceeds {upper_name}={upper}; use {name} <= {upper}.")
    return value


def square_matrix(name: str, m, *, dim: int | None = None, psd: bool = False, tol: float = 1e-6):
    """Check a symmetric (optionally PSD) matrix; returns it as a float array."""
    m = jnp.asarray(m, dtype=jnp.result_type(float))
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {m.shape}.")
    if dim is not None and m.shape[0] != dim:
        raise ValueError(f"{name} has shape {m.shape} but the problem has d={dim} parameters.")
    if is_concrete(m):
        a = np.asarray(m, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains non-finite entries.")
        scale = max(1.0, float(np.abs(a).max()))
        if np.abs(a - a.T).max() > tol * scale:
            raise ValueError(f"{name} must be symmetric; symmetrise it with (M + M.T) / 2.")
        if psd:
            lo = float(np.linalg.eigvalsh(0.5 * (a + a.T)).min())
            if lo < -tol * scale:
                raise ValueError(
                    f"{name} must be positive semi-definite, but its smallest eigenvalue is {lo:.3g}; "
                    "a covariance needs eigenvalues >= 0."
                )
    return 0.5 * (m + m.T)


def unit_interval(name: str, value, *, allow_zero: bool = True):
    """Return ``value`` as a scalar array after checking ``0 <= value < 1`` (``0 < value < 1``
    with ``allow_zero=False``) when concrete: momenta and decay rates."""
    arr = jnp.asarray(value, dtype=jnp.result_type(float))
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}.")
    if is_concrete(arr):
        v = float(arr)
        lo_ok = v >= 0 if allow_zero else v > 0
        if not (lo_ok and v < 1):
            raise ValueError(f"{name} must lie in {'[0' if allow_zero else '(0'}, 1), got {value}.")
    return arr


def nonnegative(name: str, value, *, finite: bool = False):
    """Return ``value`` as a scalar array after checking it is ``>= 0`` (and finite with
    ``finite=True``) when concrete."""
    arr = jnp.asarray(value, dtype=jnp.result_type(float))
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}.")
    if finite:
        if is_concrete(arr) and not (np.isfinite(float(arr)) and float(arr) >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    elif is_concrete(arr) and not float(arr) >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")
    return arr


def positive_values(name: str, values) -> np.ndarray:
    """A non-empty 1-D sequence of finite numbers > 0 (a grid of noise levels, radii, ...)."""
    arr = np.asarray(values, np.float64)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers > 0, got {values!r}.")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"{name} must hold finite numbers > 0, got {arr.tolist()}.")
    return arr


def positive_ints(name: str, values, *, upper: int | None = None, upper_name: str = "") -> tuple[int, ...]:
    """A non-empty sequence of ints >= 1 (at most ``upper``): batch sizes, horizons."""
    vals = list(np.atleast_1d(np.asarray(values))) if not isinstance(values, (list, tuple)) else list(values)
    if not vals:
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {values!r}.")
    return tuple(positive_int(name, v, upper=upper, upper_name=upper_name) for v in vals)


def choices(name: str, values, allowed) -> tuple[str, ...]:
    """A non-empty sequence of distinct names, each one of ``allowed``."""
    vals = (values,) if isinstance(values, str) else tuple(values)
    if not vals:
        raise ValueError(f"{name} must be a non-empty list of names from {tuple(allowed)}, got {values!r}.")
    bad = [v for v in vals if v not in allowed]
    if bad:
        raise ValueError(f"{name} has {bad!r}, which are not among {tuple(allowed)}.")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} lists a name twice: {vals!r}.")
    return vals


def level(name: str, p) -> float:
    """Return ``p`` as a float after checking ``0 < p < 1`` (probabilities, confidences, ``delta``)."""
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {p}.")
    return p


def check_batch(problem, value, *, required: bool) -> int:
    """The mini-batch size of ``problem``: ``1 <= value <= n_examples``; ``None`` means the
    full batch (``n_examples``, or 1 without data), refused when ``required`` on a finite sum."""
    n = problem.n_examples
    if value is None:
        if required and n is not None:
            raise ValueError("batch_size is required for a finite-sum problem.")
        return n or 1
    return positive_int("batch_size", value, upper=n, upper_name="the number of examples n_examples")


def noise_model(problem, noise, batch, *, required: bool, who: str):
    """``(noise, batch_size)`` of a model of mini-batch noise; ``(None, None)`` for no noise
    (refused when ``required``)."""
    from ._noise import AbstractNoise  # _noise imports this module

    if noise is None:
        if required:
            raise ValueError(
                f"{who} is a model of mini-batch noise and needs noise=..., e.g. so.MinibatchNoise() for a "
                "finite-sum problem or so.HessianNoise(); for the noiseless limit use the flow model."
            )
        return None, None
    if not isinstance(noise, AbstractNoise):
        raise ValueError(f"noise must be a noise model such as so.HessianNoise(), got {type(noise).__name__}.")
    return noise, check_batch(problem, batch, required=False)


def n_eigenpairs(k, dim: int) -> int:
    """``k`` eigenpairs of an operator of dimension ``dim``: ``1 <= k <= dim``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    if int(k) > dim:
        raise ValueError(
            f"k={int(k)} exceeds the dimension {dim} of the operator; ask for k <= {dim} eigenpairs "
            "(or restrict fewer parameters with group=...)."
        )
    return int(k)


def loop_mode(loop) -> str:
    """``loop`` of the iterative curvature estimators: ``"auto"``, ``"device"`` or ``"host"``."""
    if loop not in ("auto", "device", "host"):
        raise ValueError(f'loop must be "auto", "device" or "host", got {loop!r}.')
    return loop


def which_end(which: str) -> str:
    """``"largest"`` or ``"smallest"``: which end of a spectrum."""
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}.")
    return which


def barrier_and_temperature(barrier, temp):
    """Kramers-type formulas need a barrier > 0 and a temperature > 0."""
    if barrier <= 0:
        raise ValueError(f"barrier must be > 0, got {barrier}.")
    if temp <= 0:
        raise ValueError(f"temperature must be > 0, got {temp}.")


def check_optimizer(optimizer) -> None:
    """An optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError("optimizer must be an optax GradientTransformation, e.g. optax.adam(1e-3).")


def check_operator(op):
    """An :class:`~sde_opt.curvature.AbstractOperator` (curvature or matrix operator)."""
    from ._curvature import AbstractOperator  # _curvature imports this module

    if not isinstance(op, AbstractOperator):
        raise ValueError(
            f"op must be an operator such as so.curvature.curvature_operator(problem, p), got {type(op).__name__}."
        )
    return op


def state_is_theta(dyn, minimum) -> None:
    """``dyn`` carries no optimizer state: its state is the parameter vector itself."""
    out = jax.eval_shape(dyn.init, minimum)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == minimum.shape):
        raise ValueError(
            f"{type(dyn).__name__} carries optimizer state; the tangent map is defined here for dynamics whose "
            "state is θ itself (GD, SGD, NoisyGD, SGDSDE)."
        )


def check_key(key, name: str = "key"):
    """A PRNG key (``jax.random.key(seed)`` or ``PRNGKey(seed)``), else a ``ValueError``."""
    if isinstance(key, jax.Array) and (
        (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ())
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise ValueError(f"{name} must be one PRNG key such as jax.random.key(0), got {type(key).__name__} {key!r}.")
