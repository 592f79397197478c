"""Resumable runs: the engine's finished chunks of paths on disk.

A checkpoint is a directory: ``manifest.json`` (what run wrote it: a fingerprint of the
dynamics, the observers, the integrator, the start, the key, the step and the sizes) and one
``chunk-<first path>.npz`` per finished chunk of paths (the observers' result arrays
``leaf_0 ...``, ``steps_run``, ``n_valid`` paths, the ``process`` that computed it, and the
result's tree structure, pickled: load only checkpoints you wrote). Every file is written to a hidden
temporary name in the same directory, flushed to disk and renamed (``os.replace``, atomic on
POSIX and Windows), so a run killed at any instant leaves only complete chunk files; the
temporary files it leaves are never read. A rerun with the same configuration loads the
finished chunks and computes only the others; a directory written by a different
configuration is refused with an error that names what differs.

The fingerprint hashes every array of the configuration by value (dtype, shape, bytes) and
everything else by a stable description (types, static fields, functions by their module
and qualified name). A function whose *body* changed under the same name is not detected:
use a fresh directory after editing a loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import uuid
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

_FORMAT = "sde_opt.checkpoint/1"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _describe(x) -> str:
    if callable(x) and hasattr(x, "__qualname__"):
        return f"{getattr(x, '__module__', '?')}.{x.__qualname__}"
    return _ADDRESS.sub("", repr(x))


def fingerprint(*trees) -> str:
    """SHA-256 of a configuration: arrays by value, the rest by a stable description."""
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    h.update(_ADDRESS.sub("", str(treedef)).encode())
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            h.update(f"key:{jr.key_impl(leaf)}".encode())
            leaf = jr.key_data(leaf)
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex, bool)):
            a = np.asarray(leaf)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(_describe(leaf).encode())
    return h.hexdigest()


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
            old = json.loads(path.read_text())
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

    def load(self, start: int, n_valid: int):
        """``(results, steps_run)`` of the chunk of paths from ``start``, or ``None`` if it
        is not there (or unreadable, with a warning: it is then computed again)."""
        path = self._path(start)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                treedef = pickle.loads(z["treedef"].tobytes())
                n_leaves = int(z["n_leaves"])
                leaves = [jnp.asarray(z[f"leaf_{i}"]) for i in range(n_leaves)]
                steps, rows = int(z["steps_run"]), int(z["n_valid"])
        except Exception as err:  # a damaged file is recomputed, never used
            warnings.warn(f"checkpoint chunk {path} is unreadable ({err}); computing it again.", stacklevel=3)
            return None
        if rows != n_valid:
            raise ValueError(f"checkpoint chunk {path} holds {rows} paths, expected {n_valid}.")
        return jax.tree_util.tree_unflatten(treedef, leaves), steps

    def save(self, start: int, n_valid: int, results, steps_run: int) -> None:
        leaves, treedef = jax.tree_util.tree_flatten(results)
        arrays = {f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}
        arrays.update(n_leaves=np.asarray(len(leaves)), steps_run=np.asarray(int(steps_run)),
                      n_valid=np.asarray(n_valid), process=np.asarray(jax.process_index()),
                      treedef=np.frombuffer(pickle.dumps(treedef), dtype=np.uint8))
        _write_atomic(self._path(start), lambda f: np.savez(f, **arrays))


def sub_checkpoint(checkpoint, name: str):
    """The directory for one point of a sweep inside a study's ``checkpoint`` (``None`` stays
    ``None``)."""
    return None if checkpoint is None else os.path.join(os.fspath(checkpoint), name)
