"""The engine: many paths of a dynamics at once, in one JIT kernel.

All paths of a chunk live in one ``(paths, d)`` state; a ``lax.scan`` runs over the saved
times and a ``fori_loop`` over the steps between them. Path ``i`` draws its step-``j``
randomness from ``fold_in(fold_in(key, i), j)``, so results do not depend on the chunk size
or on the number of devices. Chunks bound memory; with several devices the path axis of
each chunk is sharded over them.

Continuous models are stepped by Euler–Maruyama on the whole batch at once (drift and
diffusion vmapped over paths, one ``(paths, r)`` block of normals per step). Their normals
are ``jax.random.normal(fold_in(fold_in(key, i), j), (r,))``, exactly as a per-path
``dyn.step`` would draw them; for one or two normals per step and threefry keys the engine
computes those same bits with a fused threefry (:func:`step_normals`), which on CPU is
2–3× faster than ``jax.random``'s own kernel for such small draws.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ._checks import positive, positive_int
from ._dynamics import AbstractContinuous, AbstractDynamics

# paths × d floats per chunk. Measured on 2 CPU cores for d = 2 ... 100: 1e5 to 5e5 floats per
# state array is the sweet spot (the step's arrays stay in cache); 2e6 was up to 2× slower at
# d = 10, and past ~1e7 throughput drops 40% (DESIGN performance notes).
_CHUNK_FLOATS = 250_000


class Ensemble(eqx.Module):
    """Paths of a dynamics on a time grid.

    Attributes:
        ts: ``(S,)`` SDE times (steps × dt); the first is 0.
        ys: ``(n_paths, S, d)`` positions; row 0 is ``y0``.
        diverged: ``(n_paths,)`` true for paths whose state became non-finite.
    """

    ts: Float[Array, " S"]
    ys: Float[Array, "n S d"]
    diverged: Bool[Array, " n"]

    @property
    def n_paths(self) -> int:
        return int(self.ys.shape[0])

    @property
    def n_diverged(self) -> int:
        return int(jnp.sum(self.diverged))

    @property
    def final(self) -> Float[Array, "n d"]:
        return self.ys[:, -1]

    def _finite(self, drop_diverged: bool):
        if self.n_diverged and not drop_diverged:
            raise ValueError(
                f"{self.n_diverged} of {self.n_paths} paths diverged (non-finite); a mean over them is "
                "meaningless. Lower lr, or pass drop_diverged=True to average the finite paths only "
                "(and report ens.n_diverged)."
            )
        return self.ys[~self.diverged]

    def mean(self, *, drop_diverged: bool = False) -> Float[Array, "S d"]:
        """Mean over paths at every saved time."""
        return jnp.mean(self._finite(drop_diverged), axis=0)

    def covariance(self, *, drop_diverged: bool = False) -> Float[Array, "S d d"]:
        """Covariance over paths at every saved time (unbiased)."""
        ys = self._finite(drop_diverged)
        c = ys - jnp.mean(ys, axis=0)
        return jnp.einsum("nsi,nsj->sij", c, c) / (ys.shape[0] - 1)


def resolve_dt(dyn: AbstractDynamics, dt):
    """The step to use: the dynamics' own step unless a continuous model is refined."""
    natural = dyn.natural_dt()
    if dt is None:
        if natural is None:
            raise ValueError(f"{type(dyn).__name__} has no natural step; pass dt=... (e.g. dt=1e-2).")
        return jnp.asarray(natural)
    dt = positive("dt", dt)
    if dyn.is_discrete and natural is not None:
        nat = float(natural)
        if abs(float(dt) - nat) > 1e-9 * max(1.0, abs(nat)):
            raise ValueError(
                f"{type(dyn).__name__} is a discrete algorithm and only takes its own step dt=lr={nat:g}; "
                f"got dt={float(dt):g}. Leave dt=None, or refine the continuous model (SGDSDE) instead."
            )
        return jnp.asarray(natural)
    return dt


def check_start(dyn: AbstractDynamics, y0, n_paths: int) -> Float[Array, "n d"]:
    """Validate ``y0`` ((d,) shared or (n_paths, d)) and broadcast it to ``(n_paths, d)``."""
    y0 = jnp.asarray(y0)
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(jnp.result_type(float))
    if y0.ndim not in (1, 2):
        raise ValueError(f"y0 must have shape (d,) or (n_paths, d), got {y0.shape}.")
    if y0.ndim == 2 and y0.shape[0] != n_paths:
        raise ValueError(f"y0 has {y0.shape[0]} rows but n_paths={n_paths}; pass (d,) or (n_paths, d).")
    if not bool(jnp.all(jnp.isfinite(y0))):
        raise ValueError("y0 contains non-finite values (nan or inf); start from a finite point.")
    row = dyn.problem.check_params(y0 if y0.ndim == 1 else y0[0], "y0")
    noise = getattr(dyn, "noise", None)
    if noise is not None:
        noise.check(dyn.problem, row.shape[0])
    return jnp.broadcast_to(y0, (n_paths, row.shape[0]))


def check_key(key):
    """A PRNG key (``jax.random.key(seed)`` or ``PRNGKey(seed)``), else a ``ValueError``."""
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise ValueError(f"key must be a PRNG key such as jax.random.key(0), got {type(key).__name__} {key!r}.")


def chunks(y0, key, chunk_size):
    """Fixed-size chunks of paths: yields ``(n_valid, y0_chunk, keys_chunk)``; the last chunk is
    padded so a kernel compiles once, and each chunk is sharded over the devices."""
    n_paths, d = y0.shape
    chunk = chunk_size_for(n_paths, d, chunk_size)
    for start in range(0, n_paths, chunk):
        n_valid = min(chunk, n_paths - start)
        y0_c = y0[start : start + n_valid]
        if n_valid < chunk:
            y0_c = jnp.concatenate([y0_c, jnp.broadcast_to(y0_c[:1], (chunk - n_valid, d))])
        yield (n_valid, *shard_paths(y0_c, path_keys(key, start, chunk)))


def path_keys(key: PRNGKeyArray, start: int, count: int):
    """Keys of paths ``start .. start+count-1``: ``fold_in(key, i)``."""
    return _path_keys(key, jnp.asarray(start), count)


@functools.partial(jax.jit, static_argnums=2)
def _path_keys(key, start, count: int):
    return jax.vmap(jr.fold_in, (None, 0))(key, start + jnp.arange(count))


def chunk_size_for(n_paths: int, d: int, chunk_size) -> int:
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_FLOATS // max(d, 1))
    chunk_size = positive_int("chunk_size", chunk_size)
    chunk = min(chunk_size, n_paths)
    n_dev = jax.device_count()
    return math.ceil(chunk / n_dev) * n_dev


def shard_paths(*arrays):
    """Place arrays with a leading path axis across all devices (no-op on one device)."""
    devices = jax.devices()
    if len(devices) == 1:
        return arrays
    mesh = Mesh(np.array(devices), ("paths",))
    spec = NamedSharding(mesh, PartitionSpec("paths"))
    return tuple(jax.device_put(a, spec) for a in arrays)


# ---------------------------------------------------------------------------- random numbers
# jax.random.normal(fold_in(k, j), (r,)) for a batch of keys k, computed with a fused, unrolled
# threefry. On CPU jax lowers threefry as a rolled loop whose rounds each go through memory;
# for the small per-step draws of low-dimensional noise that loop, not the arithmetic, is
# the cost. The bits are jax's own (partitionable threefry, then its uniform -> erfinv
# transform); `_fast_normals_ok` checks that against jax.random once per process and dtype
# and falls back to jax.random when they differ (another jax version, PRNG or config).
# r values for which the fused kernel beats jax.random's on CPU (measured: 2.3-2.7x at r = 1, 2;
# at r = 3..6 LLVM's code for the fused loop is 3-10x slower, and from r = 4 on jax.random is as fast).
_FAST_NORMALS = (1, 2)
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
                keys = path_keys(jr.key(20240917), 0, 64)
                for j in (0, 7, 2**31 - 5):
                    for r in _FAST_NORMALS:
                        ref = _reference_normals(keys, j, r, dtype)
                        got = jax.jit(_fused_normals, static_argnums=(2, 3))(jr.key_data(keys), j, r, dtype)
                        ok = ok and bool(jnp.array_equal(ref, got))
        _fast_ok_cache[flag] = ok
    return _fast_ok_cache[flag]


def step_normals(keys, j, r: int, dtype):
    """Step ``j``'s normals of every path: ``jr.normal(fold_in(keys[i], j), (r,))``, ``(n, r)``."""
    data = _threefry_key_data(keys) if r in _FAST_NORMALS else None
    if data is not None and _fast_normals_ok(dtype):
        return _fused_normals(data, j, r, dtype)
    return _reference_normals(keys, j, r, dtype)


# ---------------------------------------------------------------------------- stepping
def _is_euler_maruyama(dyn) -> bool:
    """A continuous model that steps by the default Euler–Maruyama (not overridden)."""
    return isinstance(dyn, AbstractContinuous) and type(dyn).step is AbstractContinuous.step


def vstep(dyn, state, t, dt, keys, j):
    """One step of every path; path ``i`` uses ``fold_in(keys[i], j)``.

    Continuous models take one batched Euler–Maruyama step (the same numbers as
    ``vmap(dyn.step)``, computed on the whole batch); other dynamics ``vmap`` their ``step``.
    """
    if _is_euler_maruyama(dyn):
        theta = state
        out = theta + dt * jax.vmap(dyn.drift, (None, 0))(t, theta)
        r = dyn.n_normals(theta.shape[1])
        if r:
            z = step_normals(keys, j, r, theta.dtype)
            out = out + jnp.sqrt(dt) * jax.vmap(dyn.diffusion_apply, (None, 0, 0))(t, theta, z)
        return out
    step_keys = jax.vmap(jr.fold_in, (0, None))(keys, j)
    return jax.vmap(dyn.step, (0, None, None, 0))(state, t, dt, step_keys)


@eqx.filter_jit
def _simulate_chunk(dyn, y0, keys, dt, n_saves: int, save_every: int):
    state = jax.vmap(dyn.init)(y0)

    def interval(state, s):
        def body(i, state):
            j = s * save_every + i
            return vstep(dyn, state, j * dt, dt, keys, j)

        state = jax.lax.fori_loop(0, save_every, body, state)
        return state, jax.vmap(dyn.position)(state)

    state, ys = jax.lax.scan(interval, state, jnp.arange(n_saves))
    ys = jnp.concatenate([y0[None], ys], axis=0)  # (S, n, d)
    diverged = ~jnp.all(jnp.isfinite(jax.vmap(dyn.position)(state)), axis=-1)
    return jnp.swapaxes(ys, 0, 1), diverged


def simulate(
    dyn: AbstractDynamics,
    y0,
    *,
    key: PRNGKeyArray,
    n_paths: int,
    n_steps: int,
    dt=None,
    save_every: int = 1,
    chunk_size: int | None = None,
) -> Ensemble:
    """Run ``n_paths`` paths of ``dyn`` for ``n_steps`` steps from ``y0``.

    Args:
        dyn: a dynamics value (``SGDSDE``, ``SGD``, ``NoisyGD``, ``OptaxDynamics``, ...).
        y0: start, ``(d,)`` for all paths or ``(n_paths, d)``.
        key: PRNG key; path ``i`` uses ``fold_in(key, i)``.
        n_paths, n_steps: ensemble size and number of steps.
        dt: step; defaults to the dynamics' own (``lr``). Discrete algorithms accept only it.
        save_every: keep every ``save_every``-th step; ``S = n_steps // save_every + 1``.
        chunk_size: paths per kernel call (default: about 2.5e5 floats, ``paths × d``, per chunk).

    Returns:
        :class:`Ensemble` with ``ts (S,)``, ``ys (n_paths, S, d)``, ``diverged (n_paths,)``.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
        >>> dyn = so.SGDSDE(prob, lr=0.1, batch_size=1, noise=so.HessianNoise())
        >>> ens = so.simulate(dyn, jnp.ones(2), key=jr.key(0), n_paths=8, n_steps=100)
        >>> ens.ys.shape
        (8, 101, 2)
    """
    if not isinstance(dyn, AbstractDynamics):
        raise ValueError(f"dyn must be a dynamics such as so.SGDSDE(...), got {type(dyn).__name__}.")
    n_paths = positive_int("n_paths", n_paths)
    n_steps = positive_int("n_steps", n_steps)
    save_every = positive_int("save_every", save_every, upper=n_steps, upper_name="n_steps")
    key = check_key(key)
    dt = resolve_dt(dyn, dt)
    y0 = check_start(dyn, y0, n_paths)
    n_saves = n_steps // save_every
    ys_parts, div_parts = [], []
    for n_valid, y0_c, keys in chunks(y0, key, chunk_size):
        ys, div = _simulate_chunk(dyn, y0_c, keys, dt.astype(y0.dtype), n_saves, save_every)
        ys_parts.append(ys[:n_valid])
        div_parts.append(div[:n_valid])
    ys = jnp.concatenate(ys_parts) if len(ys_parts) > 1 else ys_parts[0]
    diverged = jnp.concatenate(div_parts) if len(div_parts) > 1 else div_parts[0]
    ts = jnp.arange(n_saves + 1, dtype=y0.dtype) * (save_every * dt.astype(y0.dtype))
    return Ensemble(ts=ts, ys=ys, diverged=diverged)
