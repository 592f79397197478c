"""Results on disk: ``<stem>.npz`` arrays plus ``<stem>.json`` metadata; loading never unpickles.

A result is written as a tree: registered result classes (equinox Modules and dataclasses,
see :func:`register_result`) by class name and field, with tuples, lists, dicts with string
keys, strings, numbers, booleans and ``None`` in the JSON file and every array (numpy or
jax, any dtype but object) in the ``.npz`` under its path in the tree. Loading rebuilds the
same tree: the same classes, containers, array types, dtypes and bits.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

_REGISTRY: dict[str, type] = {}
_FORMAT = 2


def register_result(cls):
    """Make a result class (an equinox Module or a dataclass) saveable and loadable by name,
    alone or nested inside another result, a tuple, a list or a dict."""
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"{cls.__name__} is not a dataclass or an equinox Module; register only result classes.")
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


def _float(x: float):
    # JSON has no nan/inf: spell them out, so that a file stays standard JSON
    return x if math.isfinite(x) else {"float": repr(x)}


def _encode(x, path: str, arrays: dict):
    """``x`` as JSON, its arrays moved into ``arrays`` under their path in the tree."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(x)
        if a.dtype.kind == "O":
            raise ValueError(f"{path or 'result'} is an object array; save numbers, booleans or strings.")
        kind = "jax" if isinstance(x, jax.Array) else ("numpy_scalar" if isinstance(x, np.generic) else "numpy")
        name = path or "value"
        arrays[name] = a
        return {"array": name, "type": kind}
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return _float(x)
    if isinstance(x, tuple):
        return {"tuple": [_encode(v, f"{path}.{i}" if path else str(i), arrays) for i, v in enumerate(x)]}
    if isinstance(x, list):
        return {"list": [_encode(v, f"{path}.{i}" if path else str(i), arrays) for i, v in enumerate(x)]}
    if isinstance(x, dict):
        bad = [k for k in x if not isinstance(k, str) or "." in k]
        if bad:
            raise ValueError(f"{path or 'result'} has keys {bad!r}; dict keys must be strings without '.'.")
        return {"dict": {k: _encode(v, f"{path}.{k}" if path else k, arrays) for k, v in x.items()}}
    name = type(x).__name__
    if dataclasses.is_dataclass(x) and _REGISTRY.get(name) is type(x):
        fields = {f.name: _encode(getattr(x, f.name), f"{path}.{f.name}" if path else f.name, arrays)
                  for f in dataclasses.fields(x)}
        return {"result": name, "fields": fields}
    raise ValueError(
        f"{path or 'result'} is a {name}, which is not a saveable result; register its class with "
        "sde_opt.register_result, or save arrays, numbers, strings, tuples, lists and dicts of them."
    )


def _decode(t, arrays: dict):
    if t is None or isinstance(t, (bool, int, float, str)):
        return t
    if isinstance(t, dict):
        if "array" in t:
            a = arrays[t["array"]]
            return jnp.asarray(a) if t["type"] == "jax" else (a[()] if t["type"] == "numpy_scalar" else a)
        if "float" in t:
            return float(t["float"])
        if "tuple" in t:
            return tuple(_decode(v, arrays) for v in t["tuple"])
        if "list" in t:
            return [_decode(v, arrays) for v in t["list"]]
        if "dict" in t:
            return {k: _decode(v, arrays) for k, v in t["dict"].items()}
        if "result" in t:
            cls = _REGISTRY.get(t["result"])
            if cls is None:
                raise ValueError(f"unknown result kind {t['result']!r}; import the module that defines it.")
            return _build(cls, {k: _decode(v, arrays) for k, v in t["fields"].items()})
    raise ValueError(f"unreadable entry {t!r} in the metadata.")


def _build(cls, values: dict):
    # the stored fields exactly as they were: no __init__, converters or checks rerun
    obj = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    return obj


def save(path, result, *, config: dict | None = None, key=None) -> pathlib.Path:
    """Write ``result`` to ``path.npz`` (its arrays) and ``path.json`` (its structure, class
    names, strings and numbers, plus ``config``, ``key``, package and jax versions, date).

    ``result`` is a registered result (see :func:`register_result`), possibly holding other
    results, tuples, lists, dicts, strings and static config, or a dict / tuple of those.
    :func:`load` gives back an equal object. Returns the stem."""
    from . import __version__

    stem = _stem(path)
    arrays: dict = {}
    tree = _encode(result, "", arrays)
    if isinstance(result, dict):
        kind = "dict"
    elif isinstance(result, (tuple, list)):
        kind = type(result).__name__
    elif isinstance(result, (jax.Array, np.ndarray)):
        kind = "array"
    else:
        kind = type(result).__name__
    stem.parent.mkdir(parents=True, exist_ok=True)
    np.savez(stem.with_suffix(".npz"), **arrays)
    meta = {
        "kind": kind,
        "format": _FORMAT,
        "tree": tree,
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
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if isinstance(x, float):
        return repr(x)
    raise TypeError(f"cannot store {type(x).__name__} in JSON metadata")


def load(path):
    """Read a result written by :func:`save`. Returns ``(result, meta)``."""
    stem = _stem(path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}  # reading every array refuses object (pickled) arrays
    if "tree" in meta:
        return _decode(meta["tree"], arrays), meta
    # files of the first format: a flat dict of arrays, or one result's arrays and plain fields
    arrays = {k: (jnp.asarray(v) if v.dtype.kind in "biufc" else v) for k, v in arrays.items()}
    if meta["kind"] == "dict":
        return arrays, meta
    cls = _REGISTRY.get(meta["kind"])
    if cls is None:
        raise ValueError(f"unknown result kind {meta['kind']!r} in {stem}.json")
    return _build(cls, {**arrays, **meta["fields"]}), meta
