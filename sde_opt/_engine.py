"""The engine: many paths of a dynamics at once, in one JIT kernel.

One chunk driver (:func:`run_observers`: chunks of paths, padded so the kernel compiles
once, sharded over the devices) and one kernel (``_kernel``). What is recorded along the
paths is a value, an observer (``sde_opt._observers``: positions every ``k`` steps, a running
maximum, a first exit, a user's observable), and how the paths step is a value too, an
integrator (``sde_opt._integrators``: Euler–Maruyama with substeps, the dynamics' own step).
:func:`simulate`, :func:`sde_opt.first_exit` and :func:`sde_opt.max_excursion` are thin
wrappers; :func:`observe` is the general entry point.

All paths of a chunk live in one ``(paths, d)`` state; a loop runs over intervals of
``every`` steps (a ``while_loop`` that stops early once every observer is done) and a
``fori_loop`` over the steps of an interval. Path ``i`` draws its step-``j`` randomness from
``fold_in(fold_in(key, i), j)``, so results do not depend on the chunk size or on the
number of devices.

Continuous models are stepped by Euler–Maruyama on the whole batch at once (drift and
diffusion vmapped over paths, one ``(paths, r)`` block of normals per step). Their normals
are ``jax.random.normal(fold_in(fold_in(key, i), j), (r,))``, exactly as a per-path
``dyn.step`` would draw them; for threefry keys those same bits come from a fused threefry
(:func:`sde_opt._normals.step_normals`), which on CPU is 2–6× faster than ``jax.random``'s
own kernel for one or two normals per step and about 2× for 16 or more.
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

from ._checks import check_key, positive, positive_int
from ._checkpoint import ChunkStore, fingerprint
from ._chunking import choose_loop
from ._dynamics import AbstractDynamics
from ._integrators import AbstractIntegrator, default_integrator
from ._progress import check_progress, progress_bar
from ._observers import AbstractObserver, RunInfo, SavePositions, StepInfo, record_every

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
        if self.n_diverged == self.n_paths:
            raise ValueError(f"all {self.n_paths} paths diverged (non-finite); there is nothing to average. Lower lr.")
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
    if jnp.issubdtype(y0.dtype, jnp.complexfloating):
        raise ValueError(f"y0 must be real, got dtype {y0.dtype}.")
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


def chunk_grid(n_paths: int, d: int, chunk_size) -> tuple[int, list[int]]:
    """The chunk size and the first path of every chunk. The grid depends on ``n_paths``,
    ``d``, ``chunk_size`` and the number of local devices only, not on the number of
    processes (so a checkpoint written by one process serves two, and back)."""
    chunk = chunk_size_for(n_paths, d, chunk_size)
    return chunk, list(range(0, n_paths, chunk))


def chunk_inputs(y0, key, start: int, chunk: int):
    """``(n_valid, y0_chunk, keys_chunk)`` for the chunk of paths from ``start``: padded to
    ``chunk`` rows (repeating its first start; paths past ``n_paths`` are computed and
    dropped) so a kernel compiles once, and sharded over the local devices."""
    n_paths, d = y0.shape
    n_valid = max(0, min(chunk, n_paths - start))
    y0_c = y0[start : start + n_valid] if n_valid else y0[:1]
    if y0_c.shape[0] < chunk:
        y0_c = jnp.concatenate([y0_c, jnp.broadcast_to(y0_c[:1], (chunk - y0_c.shape[0], d))])
    return (n_valid, *shard_paths(y0_c, path_keys(key, start, chunk)))


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
    n_dev = jax.local_device_count()
    return math.ceil(chunk / n_dev) * n_dev


def shard_paths(*arrays):
    """Place arrays with a leading path axis across this process's devices (no-op on one
    device); under ``jax.distributed`` each process runs its own chunks
    (:func:`run_observers`)."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return arrays
    mesh = Mesh(np.array(devices), ("paths",))
    spec = NamedSharding(mesh, PartitionSpec("paths"))
    return tuple(jax.device_put(a, spec) for a in arrays)


# ---------------------------------------------------------------------------- the kernel
def _observer_list(observers):
    leaves, treedef = jax.tree_util.tree_flatten(observers, is_leaf=lambda x: isinstance(x, AbstractObserver))
    for o in leaves:
        if not isinstance(o, AbstractObserver):
            raise ValueError(
                f"observers must be observers such as so.SavePositions() (or a tuple/dict of them), got "
                f"{type(o).__name__}."
            )
    if not leaves:
        raise ValueError("observers is empty; pass at least one, e.g. so.SavePositions().")
    return tuple(leaves), treedef


def _interval(observers, n_steps: int, block: int) -> int:
    """Steps between the kernel's checkpoints: the ``every`` of the recording observers
    (they must agree), else ``block`` (how often "is every observer done?" is asked)."""
    everys = sorted({record_every(o) for o in observers if record_every(o) is not None})
    if len(everys) > 1:
        raise ValueError(
            f"observers record on different grids (every={everys}); give them one every, or run them "
            "in separate calls."
        )
    if not everys:
        return min(block, n_steps)
    every = everys[0]
    if n_steps % every:
        raise ValueError(
            f"n_steps={n_steps} is not a multiple of every={every}; use n_steps = "
            f"{(n_steps // every) * every} or {(n_steps // every + 1) * every}."
        )
    return every


def _start(dyn, observers, y0, keys, dt, n_steps: int):
    """The path states and the observers' carries before the first step."""
    run = RunInfo(dyn, dt, n_steps, keys)
    state = jax.vmap(dyn.init)(y0)
    theta0 = jax.vmap(dyn.position)(state)
    return state, tuple(o.init(theta0, run) for o in observers)


def _advance(dyn, integrator, observers, state, carries, keys, dt, j):
    """Step ``j`` of every path, then every observer's ``update``."""
    position = jax.vmap(dyn.position)
    before = position(state)
    t = j * dt
    # the state keeps y0's dtype (a float32 start with float64 parameters under x64)
    state = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype),
                                   integrator.step(dyn, state, t, dt, keys, j), state)
    info = StepInfo(j, t, dt, before, position(state), keys, dyn)
    return state, tuple(o.update(cc, info) for o, cc in zip(observers, carries))


def _record(dyn, observers, state, carries, s):
    """After interval ``s``: the recorders' ``record``."""
    theta = jax.vmap(dyn.position)(state)
    return tuple(o.record(cc, s, theta) if record_every(o) is not None else cc for o, cc in zip(observers, carries))


def _finished(observers, carries):
    """Whether every observer is done (``None`` when one of them never is)."""
    flags = [o.done(c) for o, c in zip(observers, carries)]
    if any(f is None for f in flags):
        return None
    return functools.reduce(jnp.logical_and, flags)


def _finish(dyn, observers, state, carries, keys, dt, n_steps: int):
    run = RunInfo(dyn, dt, n_steps, keys)
    theta = jax.vmap(dyn.position)(state)
    return tuple(o.finalize(cc, theta, run) for o, cc in zip(observers, carries))


@eqx.filter_jit
def _kernel(dyn, integrator, observers, y0, keys, dt, n_steps: int, every: int):
    """All paths of a chunk for ``n_steps`` steps in one compiled loop: intervals of
    ``every`` steps; after each step every observer's ``update``, after each interval the
    recorders' ``record``; with observers that can be done, a ``while_loop`` that stops
    when all are."""
    state, carries = _start(dyn, observers, y0, keys, dt, n_steps)
    stoppable = _finished(observers, carries) is not None
    n_intervals = -(-n_steps // every)

    def one_step(j, c):
        return _advance(dyn, integrator, observers, *c, keys, dt, j)

    def interval(s, c):
        lo = s * every
        if n_steps % every == 0:
            c = jax.lax.fori_loop(0, every, lambda i, c: one_step(lo + i, c), c)
        else:  # the last interval is shorter
            c = jax.lax.fori_loop(lo, jnp.minimum(lo + every, n_steps), one_step, c)
        state, carries = c
        return state, _record(dyn, observers, state, carries, s)

    if stoppable:
        def cond(c):
            s, _, carries = c
            return (s < n_intervals) & ~_finished(observers, carries)

        def body(c):
            s, state, carries = c
            return (s + 1, *interval(s, (state, carries)))

        s, state, carries = jax.lax.while_loop(cond, body, (jnp.asarray(0), state, carries))
        steps_run = jnp.minimum(s * every, n_steps)
    else:
        state, carries = jax.lax.fori_loop(0, n_intervals, interval, (state, carries))
        steps_run = jnp.asarray(n_steps)
    return _finish(dyn, observers, state, carries, keys, dt, n_steps), steps_run


_start_jit = eqx.filter_jit(_start)
_advance_jit = eqx.filter_jit(_advance)
_record_jit = eqx.filter_jit(_record)
_finished_jit = eqx.filter_jit(_finished)
_finish_jit = eqx.filter_jit(_finish)


def _host_kernel(dyn, integrator, observers, y0, keys, dt, n_steps: int, every: int, on_step=None):
    """:func:`_kernel` with its loops in Python: one compiled call per step (and per
    record), the same steps and observers, so a step never runs inside a compiled loop
    (see :func:`resolve_loop`)."""
    state, carries = _start_jit(dyn, observers, y0, keys, dt, n_steps)
    stoppable = _finished(observers, carries) is not None
    n_intervals = -(-n_steps // every)
    s = 0
    while s < n_intervals and not (stoppable and bool(_finished_jit(observers, carries))):
        for j in range(s * every, min((s + 1) * every, n_steps)):
            state, carries = _advance_jit(dyn, integrator, observers, state, carries, keys, dt, jnp.asarray(j))
            if on_step is not None:
                on_step()
        carries = _record_jit(dyn, observers, state, carries, jnp.asarray(s))
        s += 1
    steps_run = jnp.asarray(min(s * every, n_steps))
    return _finish_jit(dyn, observers, state, carries, keys, dt, n_steps), steps_run


def resolve_loop(loop: str, dyn, integrator, y0, key, dt) -> str:
    """Where the engine's loop over steps runs. ``"device"``: one compiled loop per chunk
    of paths (the fast choice almost everywhere). ``"host"``: Python drives the steps, one
    compiled call per step for one path at a time, for steps that XLA runs slowly inside a
    compiled loop or batched over paths: convolutions on the CPU backend. Measured on a
    151k-parameter CNN (SGD, B = 64, XLA CPU, 2 cores): 0.08 s per network-step called one
    at a time, 2 s per network-step when 4 networks are vmapped (a convolution with batched
    weights), 1.8 s in a ``lax.map`` over the networks. ``"auto"``: host exactly then."""
    state = jax.eval_shape(jax.vmap(dyn.init), y0[:1])
    keys = jax.eval_shape(lambda: path_keys(key, 0, 1))
    step = lambda st, ks: integrator.step(dyn, st, jnp.zeros((), dt.dtype), dt, ks, jnp.asarray(0))  # noqa: E731
    tag = (type(dyn), type(integrator), type(getattr(dyn, "noise", None)), y0.shape[1:], str(y0.dtype))
    return choose_loop(loop, (dyn, y0, key, dt), step, state, keys, owner=getattr(dyn, "problem", None), tag=tag)


def _concat(parts):
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def _manifest(dyn, integrator, obs, y0, key, dt, n_steps, every, chunk, host) -> dict:
    """What a checkpoint records of a run; a rerun must match every field."""
    from . import __version__

    key_data = jr.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return {
        "dynamics": f"{type(dyn).__name__} {fingerprint(dyn)}",
        "integrator": f"{type(integrator).__name__} {fingerprint(integrator)}",
        "observers": f"{[type(o).__name__ for o in obs]} {fingerprint(obs)}",
        "start": f"{y0.dtype}{list(y0.shape)} {fingerprint(y0)}",
        "key": np.asarray(key_data).ravel().tolist(),
        "n_steps": int(n_steps), "every": int(every), "dt": float(dt), "chunk": int(chunk),
        "loop": "host" if host else "device", "sde_opt": __version__,
    }


def _gather(parts: list, steps: list, chunk: int, n_paths: int):
    """Every process's chunks, in path order, on every process. Process ``p`` ran chunks
    ``p, p + P, p + 2P, ...`` (``P`` processes), each padded to ``chunk`` rows; one
    all-gather assembles them."""
    from jax.experimental import multihost_utils

    n_proc = jax.process_count()
    local = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)
    both = multihost_utils.process_allgather((local, jnp.asarray(max(steps))))
    tree, all_steps = both
    rounds = len(parts)

    def order(a):  # (P, rounds * chunk, ...) -> (rounds * P * chunk, ...)[:n_paths]
        a = np.asarray(a).reshape(n_proc, rounds, chunk, *a.shape[2:])
        return jnp.asarray(np.swapaxes(a, 0, 1).reshape(rounds * n_proc * chunk, *a.shape[3:])[:n_paths])

    return jax.tree_util.tree_map(order, tree), int(np.max(all_steps))


def _check_processes_agree(chunk: int) -> None:
    """Every process must cut the paths into the same chunks (the same local device count)."""
    from jax.experimental import multihost_utils

    got = np.asarray(multihost_utils.process_allgather(jnp.asarray([chunk, jax.local_device_count()])))
    if not (got == got[0]).all():
        raise ValueError(f"the processes disagree on the chunk size or the local device count ({got.tolist()}); "
                         "run with the same number of devices in every process.")


def _open_store(checkpoint, manifest: dict, n_proc: int, me: int) -> ChunkStore:
    """The checkpoint's chunk store. With several processes, process 0 alone creates or
    checks the manifest, and every process learns the outcome before any goes on (so a
    refused directory raises on all of them instead of leaving the others waiting)."""
    if n_proc == 1:
        return ChunkStore(checkpoint, manifest)
    from jax.experimental import multihost_utils

    error = None
    if me == 0:
        try:
            ChunkStore(checkpoint, manifest)
        except ValueError as err:
            error = err
    ok = np.asarray(multihost_utils.process_allgather(jnp.asarray(error is None)))
    if error is not None:
        raise error
    if not ok.all():
        raise ValueError(f"checkpoint {str(checkpoint)!r} was refused on process 0 (see its error).")
    return ChunkStore(checkpoint, manifest)


def run_observers(dyn, y0, observers, *, key, n_steps, dt, integrator=None, chunk_size=None, block=32,
                  loop: str = "auto", checkpoint=None, progress=None):
    """The chunk driver: validated inputs -> ``(results, steps_run)``, results in the
    structure of ``observers`` with the paths of all chunks concatenated; ``steps_run`` is
    the most steps any chunk ran (less than ``n_steps`` after an early stop). ``loop``:
    see :func:`resolve_loop` (the host loop takes one path per chunk by default).

    ``checkpoint``: a directory where each finished chunk is stored and from which a rerun
    of the same configuration loads it (:mod:`sde_opt._checkpoint`). ``progress``: a bar
    over the path-steps (:mod:`sde_opt._progress`). Under ``jax.distributed`` with ``P``
    processes, process ``p`` runs chunks ``p, p + P, ...`` on its own devices and one
    all-gather gives every process the whole result, the same as one process computes
    (paths are keyed by their index, not by who runs them)."""
    obs, treedef = _observer_list(observers)
    integrator = default_integrator(dyn) if integrator is None else integrator
    if not isinstance(integrator, AbstractIntegrator):
        raise ValueError(f"integrator must be an integrator such as so.EulerMaruyama(), got {type(integrator).__name__}.")
    integrator.check(dyn)
    check_progress(progress)
    every = _interval(obs, n_steps, block)
    dt = dt.astype(y0.dtype)
    host = resolve_loop(loop, dyn, integrator, y0, key, dt) == "host"
    if host and chunk_size is None:
        chunk_size = 1
    n_paths, d = y0.shape
    chunk, starts = chunk_grid(n_paths, d, chunk_size)
    n_proc, me = jax.process_count(), jax.process_index()
    if n_proc > 1:
        _check_processes_agree(chunk)
    store = None if checkpoint is None else _open_store(
        checkpoint, _manifest(dyn, integrator, obs, y0, key, dt, n_steps, every, chunk, host), n_proc, me)
    shapes = None  # the structure of one chunk's results, for loading and for the gather's padding

    def chunk_shapes():
        nonlocal shapes
        if shapes is None:
            _, y0_c, keys = chunk_inputs(y0, key, 0, chunk)
            shapes = eqx.filter_eval_shape(_kernel, dyn, integrator, obs, y0_c, keys, dt, n_steps, every)[0]
        return shapes

    rounds = -(-len(starts) // n_proc)
    mine = [r * n_proc + me for r in range(rounds)]  # chunk indices; past the last: padding for the gather
    parts, steps = [], []
    my_paths = sum(max(0, min(chunk, n_paths - c * chunk)) for c in mine)
    with progress_bar(my_paths * n_steps, f"{type(dyn).__name__} paths", progress, unit="path-step",
                      unit_scale=True) as bar:
        for c in mine:
            start = c * chunk
            n_valid = max(0, min(chunk, n_paths - start))
            done_before = bar.n
            if n_valid == 0:  # no paths left for this process in this round: zeros, never computed
                out = jax.tree_util.tree_map(lambda x: jnp.zeros((0, *x.shape[1:]), x.dtype), chunk_shapes())
                s = 0
            else:
                loaded = None if store is None else store.load(start, n_valid, chunk_shapes)
                if loaded is None:
                    n_valid, y0_c, keys = chunk_inputs(y0, key, start, chunk)
                    if host:
                        out, s = _host_kernel(dyn, integrator, obs, y0_c, keys, dt, n_steps, every,
                                              on_step=lambda: bar.update(n_valid))
                    else:
                        out, s = _kernel(dyn, integrator, obs, y0_c, keys, dt, n_steps, every)
                    out, s = jax.tree_util.tree_map(lambda a: a[:n_valid], out), int(s)
                    if store is not None:
                        store.save(start, n_valid, out, s)
                else:
                    out, s = loaded
            bar.update(done_before + n_valid * n_steps - bar.n)  # an early stop skips the rest
            if n_proc > 1:  # pad every chunk to `chunk` rows for the gather
                out = jax.tree_util.tree_map(
                    lambda a: jnp.concatenate([a, jnp.zeros((chunk - a.shape[0], *a.shape[1:]), a.dtype)]), out)
            parts.append(out)
            steps.append(s)
    if n_proc > 1:
        results, steps_run = _gather(parts, steps, chunk, n_paths)
    else:
        results = jax.tree_util.tree_map(lambda *a: _concat(a), *parts)
        steps_run = max(steps)
    return jax.tree_util.tree_unflatten(treedef, list(results)), steps_run


def observe(
    dyn: AbstractDynamics,
    y0,
    observers,
    *,
    key: PRNGKeyArray,
    n_paths: int,
    n_steps: int,
    dt=None,
    integrator: AbstractIntegrator | None = None,
    chunk_size: int | None = None,
    loop: str = "auto",
    checkpoint=None,
    progress=None,
):
    """Run ``n_paths`` paths of ``dyn`` for ``n_steps`` steps and return what the
    ``observers`` recorded, without storing the paths (unless one of them does).

    The engine behind :func:`simulate` (:class:`SavePositions`), :func:`sde_opt.first_exit`
    (:class:`sde_opt.FirstExit`) and :func:`sde_opt.max_excursion` (:class:`RunningMax`):
    one chunked, sharded, jitted kernel. Paths and random numbers are those of
    :func:`simulate` with the same key (path ``i`` from ``fold_in(key, i)``), so results do
    not depend on the chunk size or the number of devices.

    Args:
        dyn: a dynamics value.
        y0: start, ``(d,)`` for all paths or ``(n_paths, d)``.
        observers: an observer (:class:`AbstractObserver`) or a tuple/list/dict of them.
            Those that record every ``every`` steps must agree on ``every``, and
            ``n_steps`` must be a multiple of it. The kernel stops early when every
            observer is done (e.g. ``so.FirstExit`` once all paths have left).
        key: PRNG key.
        n_paths, n_steps: ensemble size and number of steps.
        dt: step; defaults to the dynamics' own (``lr``). Discrete algorithms accept only it.
        integrator: how to step (default: ``so.EulerMaruyama()`` for continuous models,
            ``so.OwnStep()`` for the others).
        chunk_size: paths per kernel call.
        loop: ``"device"``: each chunk's steps in one compiled loop; ``"host"``: the steps
            driven from Python, one compiled call per step, one path per chunk unless
            ``chunk_size`` says otherwise (the same numbers to rounding); ``"auto"``
            (default): host on CPU when a step's convolutions cost more than about 1e6 FLOPs, which XLA's CPU
            backend runs 25-90× slower inside a compiled loop or vmapped over networks
            (see :func:`sde_opt._engine.resolve_loop`), device otherwise.
        checkpoint: a directory for a resumable run: each finished chunk of paths is
            stored there atomically, and a rerun with the same configuration loads it instead
            of computing it (a directory of another configuration is refused). Default none.
        progress: a progress bar (tqdm): ``None`` auto (a terminal or a notebook, once the
            run has taken 2 s), ``True``, ``False``.

    Returns:
        The observers' results, in their structure (leading axis: paths).

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> prob = so.landscapes.quadratic(jnp.eye(2))
        >>> sde = so.SGDSDE(prob, lr=0.1, batch_size=1, noise=so.HessianNoise())
        >>> out = so.observe(sde, jnp.ones(2), {"loss": so.SaveObservable(prob.loss, every=10),
        ...                  "max": so.RunningMax(jnp.zeros(2), every=10)}, key=jr.key(0), n_paths=8, n_steps=50)
        >>> out["loss"].shape, out["max"].shape
        ((8, 6), (8, 5))
    """
    if not isinstance(dyn, AbstractDynamics):
        raise ValueError(f"dyn must be a dynamics such as so.SGDSDE(...), got {type(dyn).__name__}.")
    n_paths = positive_int("n_paths", n_paths)
    n_steps = positive_int("n_steps", n_steps)
    key = check_key(key)
    dt = resolve_dt(dyn, dt)
    y0 = check_start(dyn, y0, n_paths)
    results, _ = run_observers(dyn, y0, observers, key=key, n_steps=n_steps, dt=dt, integrator=integrator,
                               chunk_size=chunk_size, loop=loop, checkpoint=checkpoint, progress=progress)
    return results


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
    loop: str = "auto",
    checkpoint=None,
    progress=None,
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
        loop: where the loop over steps runs, as in :func:`observe` (``"auto"``: compiled,
            except for convolutional models on CPU).
        checkpoint: a directory for a resumable run: each finished chunk of paths is
            stored there atomically, and a rerun with the same configuration loads it instead
            of computing it (a directory of another configuration is refused). Default none.
        progress: a progress bar (tqdm): ``None`` auto (a terminal or a notebook, once the
            run has taken 2 s), ``True``, ``False``.

    Returns:
        :class:`Ensemble` with ``ts (S,)``, ``ys (n_paths, S, d)``, ``diverged (n_paths,)``.

    Examples:
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
    return _simulate(dyn, y0, key=key, n_steps=n_steps, dt=dt, save_every=save_every, chunk_size=chunk_size, loop=loop,
                     checkpoint=checkpoint, progress=progress)


def _simulate(dyn, y0, *, key, n_steps, dt, save_every, chunk_size, integrator=None, loop="auto", checkpoint=None,
              progress=None) -> Ensemble:
    """:func:`simulate` on validated inputs (and with a choice of integrator)."""
    n_saves = n_steps // save_every
    out, _ = run_observers(dyn, y0, SavePositions(every=save_every), key=key, n_steps=n_saves * save_every, dt=dt,
                           integrator=integrator, chunk_size=chunk_size, loop=loop, checkpoint=checkpoint,
                           progress=progress)
    ts = jnp.arange(n_saves + 1, dtype=y0.dtype) * (save_every * dt.astype(y0.dtype))
    return Ensemble(ts=ts, ys=out["ys"], diverged=out["diverged"])
