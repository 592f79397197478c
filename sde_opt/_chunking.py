"""Streaming a finite sum over its examples in chunks, so that peak memory is set by the
chunk size ``c``, not by the number of examples ``N``.

The data (a pytree whose leaves share a leading axis ``N``) is padded to a whole number of
chunks by repeating its first example and reshaped to ``(⌈N/c⌉, c, ...)``; a mask marks the
padding. Two primitives cover every use in the package:

- :func:`map_examples`: ``fn(example)`` for every example, stacked ``(N, ...)`` (``lax.map``
  over chunks, ``vmap`` inside a chunk);
- :func:`sum_examples`: ``Σ_chunks fn(chunk, w_chunk)`` for per-example weights ``w`` (zero on
  the padding), accumulated in a ``lax.scan``, so a gradient or an HVP of a weighted sum is
  taken chunk by chunk (reverse mode through a whole-data scan would keep every chunk's
  activations).

On the CPU backend a convolution inside a rolled loop (``scan``/``while``) runs about 30×
slower than the same convolution outside one (measured on a 151k-parameter CNN, XLA CPU,
JAX 0.10: one chunked gradient 5.7 s rolled, 0.15 s unrolled, 0.19 s unchunked), so on CPU
the chunk loop is unrolled when it has at most ``_UNROLL_MAX_CHUNKS`` chunks (compile time
grows with the unrolled length; past that, the loop stays rolled: prefer fewer, larger
chunks for convolutional models on CPU).
"""

from __future__ import annotations

import math
import weakref

import jax
import jax.numpy as jnp

from ._checks import is_concrete, loop_mode


_UNROLL_MAX_CHUNKS = 16


def _unroll(n_chunks: int) -> int:
    return n_chunks if (n_chunks <= _UNROLL_MAX_CHUNKS and jax.default_backend() == "cpu") else 1


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for x in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(x, "eqns"):
                yield x
            elif hasattr(getattr(x, "jaxpr", None), "eqns"):
                yield x.jaxpr


def conv_flops(jaxpr) -> float:
    """Floating-point operations of the convolutions in ``jaxpr`` (sub-jaxprs counted once):
    ``2 × |output| × |kernel| / kernel output features`` each, forward and gradient
    convolutions alike."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / max(out_features, 1)
        total += sum(conv_flops(j) for j in _sub_jaxprs(eqn))
    return total


# a loop body whose convolutions cost less than this (FLOPs) stays in a compiled loop: there
# XLA CPU's slow in-loop convolution costs less than a call from Python. Measured (the gradient
# of one 3×3 convolution, 50 steps, 2 cores): 9e4 FLOPs a step, 0.053 ms compiled against
# 0.070 ms from Python; 1.4e7, 2.5 ms against 0.58 ms; 1.1e8, 34 ms against 2.9 ms.
_SLOW_CONV_FLOPS = 1e6

_SLOW: dict = {}


def loops_are_slow(fn, *args, owner=None, tag=()) -> bool:
    """Whether ``fn(*args)`` should not run inside a rolled compiled loop here: on the CPU
    backend, when its convolutions cost more than 1e6 FLOPs (see the module docstring; measured again on
    JAX 0.10.2: the weight gradient of one 3×3 convolution on 256 16×16×16 images, 8 times,
    0.26 s as 8 calls and 15.7 s in a ``fori_loop``, where XLA leaves that convolution in a
    layout its CPU backend runs on a slow path). Traced abstractly (no FLOPs); with an
    ``owner`` (the problem) the answer is remembered per ``tag`` while the owner lives."""
    if jax.default_backend() != "cpu":
        return False
    if owner is None:
        return conv_flops(jax.make_jaxpr(fn)(*args).jaxpr) > _SLOW_CONV_FLOPS
    # remembered per owner (a problem: what holds the model) while it lives, and per tag,
    # so that repeated calls do not trace the model again
    seen = _SLOW.get(id(owner))
    if seen is None:
        seen = _SLOW[id(owner)] = {}
        weakref.finalize(owner, _SLOW.pop, id(owner), None)
    if tag not in seen:
        seen[tag] = conv_flops(jax.make_jaxpr(fn)(*args).jaxpr) > _SLOW_CONV_FLOPS
    return seen[tag]


def choose_loop(loop: str, inputs, fn, *args, owner=None, tag=()) -> str:
    """The one rule for where a loop over products or steps runs: ``loop`` is ``"device"``
    (one compiled loop), ``"host"`` (Python drives it, one compiled call per iteration) or
    ``"auto"``: host when :func:`loops_are_slow` for ``fn(*args)``, and always device when
    any array of ``inputs`` is traced (inside ``jit``/``vmap``, where a Python loop cannot
    run; an explicit ``"host"`` there is an error)."""
    loop = loop_mode(loop)
    traced = not all(is_concrete(x) for x in jax.tree_util.tree_leaves(inputs) if isinstance(x, jax.Array))
    if loop == "host" and traced:
        raise ValueError('loop="host" runs the loop in Python and cannot be traced (inside jit, vmap or grad); '
                         'use loop="device" or call it outside the transformation.')
    if loop != "auto":
        return loop
    if traced:
        return "device"
    return "host" if loops_are_slow(fn, *args, owner=owner, tag=tag) else "device"


# chunk_size=None on the CPU backend, for a per-example loss whose convolutions over the data
# cost more than _CHUNK_CONV_FLOPS: stream in chunks of about _CPU_CONV_CHUNK examples (at most
# _UNROLL_MAX_CHUNKS of them, so the loop stays unrolled)
_CPU_CONV_CHUNK = 128
_CHUNK_CONV_FLOPS = 1e8


def speed_chunk_size(example_loss, theta, example, n: int) -> int | None:
    """The chunk size a problem with ``chunk_size=None`` streams with: ``None`` (all ``n``
    examples at once), except on the CPU backend when the convolutions of
    ``example_loss(theta, example)`` (traced abstractly, no FLOPs spent) cost more than 1e8
    FLOPs over the ``n > 128`` examples (their activations no longer fit the caches): then chunks of
    about 128 examples, at most 16 chunks (``ceil(n / min(16, ceil(n / 128)))``).

    Why: a convolution's activations for thousands of images spill the CPU's caches. On the
    151k-parameter CNN of the benchmarks (2,048 images of 16×16×3, XLA CPU, 2 cores, JAX
    0.10.2) a full-batch gradient took 0.54 s in one chunk and 0.26 s in 16 chunks of 128, a
    Hessian-vector product 0.96 s and 0.57 s (compile 0.8 s and 2.0 s); at 10,000 images in
    16 chunks of 625 the product cost the same per image as in chunks of 128. Results equal
    the unchunked ones to float rounding, and memory is lower."""
    if n <= _CPU_CONV_CHUNK or jax.default_backend() != "cpu":
        return None
    if conv_flops(jax.make_jaxpr(example_loss)(theta, example).jaxpr) * n <= _CHUNK_CONV_FLOPS:
        return None
    n_chunks = min(_UNROLL_MAX_CHUNKS, math.ceil(n / _CPU_CONV_CHUNK))
    return math.ceil(n / n_chunks)


def leading_size(tree) -> int:
    return int(jax.tree_util.tree_leaves(tree)[0].shape[0])


def _unchunked(chunk_size, n) -> bool:
    return chunk_size is None or chunk_size >= n


def split_chunks(tree, n: int, chunk_size: int):
    """``tree`` (leading axis ``n``) padded and reshaped to ``(n_chunks, chunk_size, ...)``."""
    c = chunk_size
    n_chunks = math.ceil(n / c)
    pad = n_chunks * c - n

    def reshape(x):
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)])
        return x.reshape((n_chunks, c) + x.shape[1:])

    return jax.tree_util.tree_map(reshape, tree)


def map_examples(fn, data, chunk_size: int | None):
    """``fn(example)`` for every example of ``data``, stacked along a leading axis ``N``;
    ``chunk_size`` examples are vmapped at a time."""
    n = leading_size(data)
    if _unchunked(chunk_size, n):
        return jax.vmap(fn)(data)
    chunks = split_chunks(data, n, chunk_size)
    n_chunks = jax.tree_util.tree_leaves(chunks)[0].shape[0]
    out = jax.lax.scan(lambda _, ch: (None, jax.vmap(fn)(ch)), None, chunks, unroll=_unroll(n_chunks))[1]
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], out)


def sum_examples(fn, data, weights, chunk_size: int | None):
    """``Σ_chunks fn(chunk, w)``: ``fn(chunk, w)`` gets a chunk of the data (leading axis
    ``c``) and its per-example weights ``w`` (``(c,)``, zero on the padding) and returns a
    pytree; the chunk results are summed. ``fn`` must be linear in ``w`` per example for
    the padding to drop out (it is in every use: ``Σᵢ wᵢ (...)ᵢ``)."""
    n = leading_size(data)
    if _unchunked(chunk_size, n):
        return fn(data, weights)
    n_chunks = math.ceil(n / chunk_size)
    w = jnp.zeros((n_chunks * chunk_size,), weights.dtype).at[:n].set(weights).reshape(n_chunks, chunk_size)
    chunks = split_chunks(data, n, chunk_size)
    first = jax.tree_util.tree_map(lambda x: x[0], chunks)
    shapes = jax.eval_shape(fn, first, w[0])
    init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(acc, xs):
        chunk, wc = xs
        return jax.tree_util.tree_map(jnp.add, acc, fn(chunk, wc)), None

    return jax.lax.scan(body, init, (chunks, w), unroll=_unroll(n_chunks))[0]
