"""Per-path, per-step standard normals with the engine's key scheme.

Path ``i`` draws step ``j``'s normals as ``jax.random.normal(fold_in(keys[i], j), (r,))``.
For threefry keys they are computed with a fused, unrolled threefry (:func:`step_normals`),
the same bits as ``jax.random``'s: 2-6x faster on CPU for 1 or 2 normals per step, about 2x
for 16 or more.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np


# ---------------------------------------------------------------------------- random numbers
# jax.random.normal(fold_in(k, j), (r,)) for a batch of keys k, computed with a fused, unrolled
# threefry. On CPU jax lowers threefry as a rolled loop whose rounds each go through memory;
# for the small per-step draws of low-dimensional noise that loop, not the arithmetic, is
# the cost. The bits are jax's own (partitionable threefry, then its uniform -> erfinv
# transform); `_fast_normals_ok` checks that against jax.random once per process and dtype
# and falls back to jax.random when they differ (another jax version, PRNG or config).
# r values for which the fused kernel beats jax.random's on CPU. Measured 2026-12-01 on 2 cores
# (/tmp-style loop of 100-200 steps, 2,000-10,000 paths, normals/s fused vs jax.random):
# r = 1, 2: 6x; r = 4, 8: 1.8-2.1x; r >= 16 (16 ... 1000): 1.3-2.3x (r = 100: 1.9x). At r = 3,
# 5, 6, 7, 9-14 LLVM's code for the fused loop is no faster or up to 2x slower, so those keep
# jax.random's kernel.
_FAST_SMALL = (1, 2, 4, 8)
_FAST_FROM = 16
_CHECK_R = (1, 2, 4, 8, 16, 37)
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_fast_ok_cache: dict = {}


def _rotl(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as in ``jax.random``, unrolled."""
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ _rotl(x1, r)
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _bits_to_normal(b1, b2, dtype):
    """``jax.random.normal``'s transform of one threefry output pair per element."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        bits, uint, shift = b1 ^ b2, np.uint32, 9
    else:
        bits = (b1.astype(np.uint64) << np.uint64(32)) | b2.astype(np.uint64)
        uint, shift = np.uint64, 12
    one = np.array(1.0, dtype).view(uint)
    u = jax.lax.bitcast_convert_type((bits >> uint(shift)) | one, dtype) - np.array(1.0, dtype)
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    hi = np.array(1.0, dtype)
    u = jax.lax.max(lo, u * (hi - lo) + lo)
    return np.array(np.sqrt(2), dtype) * jax.lax.erf_inv(u)


def _fused_normals(key_data, j, r: int, dtype):
    """``vmap(lambda k: jr.normal(jr.fold_in(k, j), (r,), dtype))`` from raw threefry key
    data ``(n, 2)``: fold-in is ``threefry(k, (0, j))``, element ``c`` is ``threefry(k', (0, c))``."""
    k1, k2 = key_data[:, 0], key_data[:, 1]
    a1, a2 = _threefry2x32(k1, k2, np.uint32(0), jnp.asarray(j).astype(jnp.uint32))
    c = jnp.arange(r, dtype=jnp.uint32)
    b1, b2 = _threefry2x32(a1[:, None], a2[:, None], np.uint32(0), c)
    return _bits_to_normal(b1, b2, dtype)


def _reference_normals(keys, j, r: int, dtype):
    return jax.vmap(lambda k: jr.normal(jr.fold_in(k, j), (r,), dtype=dtype))(keys)


def _threefry_key_data(keys):
    """Raw ``(n, 2)`` threefry key data, or ``None`` for keys of another PRNG."""
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        return jr.key_data(keys) if str(jr.key_impl(keys)) == "threefry2x32" else None
    if keys.dtype == jnp.uint32 and keys.shape[-1:] == (2,) and jax.config.jax_default_prng_impl == "threefry2x32":
        return keys
    return None


def _fast_normals_ok(dtype) -> bool:
    """Whether :func:`_fused_normals` reproduces ``jax.random`` bit for bit here."""
    flag = (np.dtype(dtype).name, bool(jax.config.jax_threefry_partitionable))
    if flag not in _fast_ok_cache:
        ok = flag[0] in ("float32", "float64") and flag[1]
        if ok:
            with jax.ensure_compile_time_eval():
                keys = jax.vmap(jr.fold_in, (None, 0))(jr.key(20240917), jnp.arange(64))
                for j in (0, 7, 2**31 - 5):
                    for r in _CHECK_R:
                        ref = _reference_normals(keys, j, r, dtype)
                        got = jax.jit(_fused_normals, static_argnums=(2, 3))(jr.key_data(keys), j, r, dtype)
                        ok = ok and bool(jnp.array_equal(ref, got))
        _fast_ok_cache[flag] = ok
    return _fast_ok_cache[flag]


def step_normals(keys, j, r: int, dtype):
    """Step ``j``'s normals of every path: ``jr.normal(fold_in(keys[i], j), (r,))``, ``(n, r)``."""
    data = _threefry_key_data(keys) if (r in _FAST_SMALL or r >= _FAST_FROM) else None
    if data is not None and _fast_normals_ok(dtype):
        return _fused_normals(data, j, r, dtype)
    return _reference_normals(keys, j, r, dtype)
