"""Results on disk: ``<stem>.npz`` arrays plus ``<stem>.json`` metadata; loading never unpickles."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

_REGISTRY: dict[str, type] = {}


def register_result(cls):
    """Make a result class (an equinox Module of arrays) saveable and loadable by name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _stem(path) -> pathlib.Path:
    p = pathlib.Path(path)
    return p.with_suffix("") if p.suffix in (".npz", ".json") else p


def key_data(key) -> list[int]:
    """A PRNG key as plain integers (for metadata)."""
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).ravel().tolist()


def save(path, result, *, config: dict | None = None, key=None) -> pathlib.Path:
    """Write ``result`` (a registered result, or a dict of arrays) to ``path.npz`` and
    ``path.json`` (class, config, key, package and jax versions, date). Returns the stem."""
    from . import __version__

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(result, dict):
        kind, arrays, scalars = "dict", dict(result), {}
    else:
        kind = type(result).__name__
        if kind not in _REGISTRY:
            raise ValueError(f"{kind} is not a saveable result; pass a dict of arrays instead.")
        arrays, scalars = {}, {}
        for f in dataclasses.fields(result):
            v = getattr(result, f.name)
            if isinstance(v, (jax.Array, np.ndarray)):
                arrays[f.name] = v
            else:
                scalars[f.name] = v
    np.savez(stem.with_suffix(".npz"), **{k: np.asarray(v) for k, v in arrays.items()})
    meta = {
        "kind": kind,
        "fields": scalars,
        "config": config or {},
        "key": None if key is None else key_data(key),
        "sde_opt_version": __version__,
        "jax_version": jax.__version__,
        "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=_jsonable))
    return stem


def _jsonable(x):
    if isinstance(x, (np.generic, jax.Array, np.ndarray)):
        return np.asarray(x).tolist()
    raise TypeError(f"cannot store {type(x).__name__} in JSON metadata")


def load(path):
    """Read a result written by :func:`save`. Returns ``(result, meta)``."""
    stem = _stem(path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as f:
        arrays = {k: (jnp.asarray(f[k]) if f[k].dtype.kind in "biufc" else f[k]) for k in f.files}
    if meta["kind"] == "dict":
        return arrays, meta
    cls = _REGISTRY.get(meta["kind"])
    if cls is None:
        raise ValueError(f"unknown result kind {meta['kind']!r} in {stem}.json")
    obj = object.__new__(cls)
    for name, value in {**arrays, **meta["fields"]}.items():
        object.__setattr__(obj, name, value)
    return obj, meta


