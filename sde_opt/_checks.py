"""Argument checks shared by the public constructors: errors name the argument and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer), so it can be checked in Python."""
    return not isinstance(x, jax.core.Tracer)


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
