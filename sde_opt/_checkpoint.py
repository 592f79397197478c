"""Resumable runs: the engine's finished chunks of paths on disk.

A checkpoint is a directory: ``manifest.json`` (what run wrote it: a fingerprint of the
dynamics, the observers, the integrator, the start, the key, the step and the sizes) and one
``chunk-<first path>.npz`` per finished chunk of paths (the observers' result arrays
``leaf_0 ...``, ``steps_run``, ``n_valid`` paths and the ``process`` that computed it; plain
arrays, never pickles: the structure comes from the run that reads them). Every file is written to a hidden
temporary name in the same directory, flushed to disk and renamed (``os.replace``, atomic on
POSIX and Windows), so a run killed at any instant leaves only complete chunk files; the
temporary files it leaves are never read. A rerun with the same configuration loads the
finished chunks and computes only the others; a directory written by a different
configuration is refused with an error that names what differs.

The fingerprint hashes every array of the configuration by value (dtype, shape, bytes) and
every function by what decides its values: its code (bytecode, constants, names), its
defaults, the values in its closure cells and the arrays and functions among the globals it
names, recursively (so a loss closing over a different constant, or a different lambda,
is a different run). Not seen: state reached only through mutable objects other than
arrays (a global dict, an attribute of a module), and compiled code outside Python.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import uuid
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

_FORMAT = "sde_opt.checkpoint/1"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _update_value(h, leaf) -> bool:
    """Hash an array or a number by value; False for anything else."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        h.update(f"key:{jr.key_impl(leaf)}".encode())
        leaf = jr.key_data(leaf)
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex, bool)):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return True
    return False


def _update_code(h, code, seen) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            _update_code(h, c, seen)
        else:
            _update_object(h, c, seen)


def _update_function(h, f, seen) -> None:
    """A function by what decides its values: its code, defaults, the values of its closure
    cells and of the array or function globals it names (recursively)."""
    h.update(f"{getattr(f, '__module__', '?')}.{f.__qualname__}".encode())
    _update_code(h, f.__code__, seen)
    for d in (f.__defaults__ or ()):
        _update_object(h, d, seen)
    for k, d in sorted((f.__kwdefaults__ or {}).items()):
        h.update(k.encode())
        _update_object(h, d, seen)
    for cell in f.__closure__ or ():
        try:
            _update_object(h, cell.cell_contents, seen)
        except ValueError:  # an empty cell
            h.update(b"<empty cell>")
    g = getattr(f, "__globals__", {})
    for name in f.__code__.co_names:
        v = g.get(name)
        if isinstance(v, (jax.Array, np.ndarray, float, int, complex)) or callable(v) and hasattr(v, "__code__"):
            h.update(name.encode())
            _update_object(h, v, seen)


def _update_object(h, x, seen) -> None:
    if id(x) in seen:
        h.update(b"<seen>")
        return
    if _update_value(h, x):
        return
    seen = seen | {id(x)}
    if isinstance(x, functools.partial):
        h.update(b"partial")
        _update_object(h, x.func, seen)
        for a in x.args:
            _update_object(h, a, seen)
        for k, v in sorted(x.keywords.items()):
            h.update(k.encode())
            _update_object(h, v, seen)
    elif inspect.ismethod(x):
        _update_object(h, x.__func__, seen)
        _update_object(h, x.__self__, seen)
    elif inspect.isfunction(x):
        _update_function(h, x, seen)
    elif hasattr(x, "__wrapped__") and callable(x):  # jax.jit and functools.wraps wrappers
        h.update(type(x).__name__.encode())
        _update_object(h, x.__wrapped__, seen)
    elif isinstance(x, (str, bytes, type(None), type)) or inspect.ismodule(x) or inspect.isbuiltin(x):
        h.update(_ADDRESS.sub("", repr(x)).encode())
    elif isinstance(x, (list, tuple, dict)) or isinstance(x, eqx.Module):
        leaves, treedef = jax.tree_util.tree_flatten(x)
        h.update(_ADDRESS.sub("", str(treedef)).encode())
        for leaf in leaves:
            _update_object(h, leaf, seen)
    else:  # other objects (custom_jvp functions, dtypes, ...): their type and stable description
        fun = getattr(x, "fun", None)  # jax.custom_jvp / custom_vjp
        if fun is not None and callable(fun):
            h.update(type(x).__name__.encode())
            _update_object(h, fun, seen)
        else:
            h.update(f"{type(x).__module__}.{type(x).__qualname__}:{_ADDRESS.sub('', repr(x))}".encode())


def fingerprint(*trees) -> str:
    """SHA-256 of a configuration: arrays by value; functions by their code, defaults,
    closure values and the array or function globals they name; the rest by type and a
    stable description."""
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    h.update(_ADDRESS.sub("", str(treedef)).encode())
    for leaf in leaves:
        _update_object(h, leaf, frozenset())
    # static fields of modules (functions, configuration) live in the treedef: hash their values too
    for node in _static_values(trees):
        _update_object(h, node, frozenset())
    return h.hexdigest()


def _static_values(trees):
    """The static (non-leaf) fields of the equinox modules in ``trees``, in order."""
    out = []

    def visit(x):
        if isinstance(x, eqx.Module):
            for f in dataclasses.fields(x):
                v = getattr(x, f.name, None)
                if f.metadata.get("static", False):
                    out.append(v)
                else:
                    visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                visit(x[k])

    visit(trees)
    return out


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class ChunkStore:
    """The chunk files of one run in ``directory`` (see the module docstring)."""

    def __init__(self, directory, manifest: dict):
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"checkpoint={str(directory)!r} exists and is not a directory.")
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = {"format": _FORMAT, **manifest}
        path = self.dir / "manifest.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except ValueError as err:
                raise ValueError(f"checkpoint manifest {str(path)!r} is unreadable ({err}); pass a new directory.") from None
            differ = [k for k in sorted(set(old) | set(manifest)) if old.get(k) != manifest.get(k)]
            if differ:
                what = "; ".join(f"{k}: {old.get(k)!r} there, {manifest.get(k)!r} now" for k in differ)
                raise ValueError(
                    f"checkpoint directory {str(self.dir)!r} was written by a different run ({what}). "
                    "Pass a new directory, or delete this one to start again."
                )
        else:
            if any(self.dir.glob("chunk-*.npz")):
                raise ValueError(f"checkpoint directory {str(self.dir)!r} has chunk files but no manifest; "
                                 "it was not written by this version of sde_opt. Pass a new directory.")
            text = json.dumps(manifest, indent=1, sort_keys=True)
            _write_atomic(path, lambda f: f.write(text.encode()))

    def _path(self, start: int) -> Path:
        return self.dir / f"chunk-{start:012d}.npz"

    def load(self, start: int, n_valid: int, structure):
        """``(results, steps_run)`` of the chunk of paths from ``start``, or ``None`` if it
        is not there (or unreadable or of the wrong shape, with a warning: it is then
        computed again). ``structure()`` gives the results' structure (shapes of one
        padded chunk), which the manifest guarantees the file was written with."""
        path = self._path(start)
        if not path.exists():
            return None
        treedef = jax.tree_util.tree_structure(structure())
        shapes = jax.tree_util.tree_leaves(structure())
        try:
            with np.load(path, allow_pickle=False) as z:
                leaves = [z[f"leaf_{i}"] for i in range(int(z["n_leaves"]))]
                steps, rows = int(z["steps_run"]), int(z["n_valid"])
            if rows != n_valid or len(leaves) != len(shapes) or any(
                    a.shape != (n_valid, *sh.shape[1:]) or a.dtype != sh.dtype for a, sh in zip(leaves, shapes)):
                raise ValueError(f"it holds {rows} paths in arrays {[a.shape for a in leaves]}, expected {n_valid} "
                                 f"paths in {[(n_valid, *sh.shape[1:]) for sh in shapes]}")
        except Exception as err:  # a damaged file is recomputed, never used
            warnings.warn(f"checkpoint chunk {path} is unreadable ({err}); computing it again.", stacklevel=3)
            return None
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves]), steps

    def save(self, start: int, n_valid: int, results, steps_run: int) -> None:
        leaves = jax.tree_util.tree_leaves(results)
        arrays = {f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}
        arrays.update(n_leaves=np.asarray(len(leaves)), steps_run=np.asarray(int(steps_run)),
                      n_valid=np.asarray(n_valid), process=np.asarray(jax.process_index()))
        _write_atomic(self._path(start), lambda f: np.savez(f, **arrays))


def sub_checkpoint(checkpoint, name: str):
    """The directory for one point of a sweep inside a study's ``checkpoint`` (``None`` stays
    ``None``)."""
    return None if checkpoint is None else os.path.join(os.fspath(checkpoint), name)
