"""Round trips of results through so.save / so.load, compared exactly (shared by the test files)."""

import dataclasses

import jax
import jax.random as jr
import numpy as np

import sde_opt as so


def assert_same(a, b, path="result"):
    """Exactly the same tree: classes, containers, array types, dtypes, shapes and bits."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, (np.ndarray, jax.Array, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def round_trip(tmp_path, result, name="r"):
    stem = so.save(tmp_path / name, result, config={"what": name}, key=jr.key(3))
    loaded, meta = so.load(stem)
    assert_same(result, loaded)
    assert meta["config"] == {"what": name} and meta["kind"] == type(result).__name__
    return loaded
