"""Results on disk: .npz arrays + JSON metadata, round trips, and no unpickling on load."""

import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so
from result_helpers import round_trip


@pytest.fixture(scope="module")
def ensemble():
    quad = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
    starts = jnp.array([[1.0, 1.0], [0.0, 0.0], [0.5, 0.0]])
    return so.simulate(so.GD(quad, 1.0), starts, key=jr.key(0), n_paths=3, n_steps=700, save_every=100)


def test_ensemble_round_trip(tmp_path, ensemble):
    config = {"lr": 1.0, "n_paths": 3, "landscape": "quadratic", "lams": [1.0, 4.0]}
    stem = so.save(tmp_path / "runs" / "gd", ensemble, config=config, key=jr.key(0))
    assert (tmp_path / "runs" / "gd.npz").exists() and (tmp_path / "runs" / "gd.json").exists()
    loaded, meta = so.load(stem)
    assert isinstance(loaded, so.Ensemble)
    for name in ("ts", "ys", "diverged"):
        a, b = np.asarray(getattr(loaded, name)), np.asarray(getattr(ensemble, name))
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # bit-exact, inf/nan included
    assert ensemble.n_diverged == 1  # the diverged path survives the trip as data
    np.testing.assert_array_equal(loaded.mean(drop_diverged=True), ensemble.mean(drop_diverged=True))
    with pytest.raises(ValueError, match="drop_diverged"):
        loaded.mean()
    assert meta["config"] == config
    assert meta["kind"] == "Ensemble"


def test_metadata_contents(tmp_path, ensemble):
    import jax

    so.save(tmp_path / "gd.npz", ensemble, config={"lr": np.float64(0.5), "sizes": np.arange(3)}, key=jr.key(7))
    meta = json.loads((tmp_path / "gd.json").read_text())
    assert meta["kind"] == "Ensemble"
    assert meta["sde_opt_version"] == so.__version__
    assert meta["jax_version"] == jax.__version__
    assert meta["key"] == np.asarray(jr.key_data(jr.key(7))).ravel().tolist()
    assert meta["config"] == {"lr": 0.5, "sizes": [0, 1, 2]}  # numpy values become plain JSON
    assert isinstance(meta["saved"], str) and meta["saved"][:2] == "20"
    # the legacy uint32 key format is stored the same way
    so.save(tmp_path / "raw", {"a": np.ones(2)}, key=jr.PRNGKey(7))
    assert json.loads((tmp_path / "raw.json").read_text())["key"] == np.asarray(jr.PRNGKey(7)).tolist()


def test_dict_round_trip(tmp_path):
    arrays = {"rates": np.array([0.1, 0.2]), "counts": np.arange(4, dtype=np.int32), "flag": np.array(True),
              "grid": jnp.linspace(0, 1, 5)}
    stem = so.save(tmp_path / "est", arrays, config={"what": "test"})
    loaded, meta = so.load(str(stem) + ".json")  # either suffix, or none, names the pair
    assert meta["kind"] == "dict" and meta["key"] is None and meta["config"] == {"what": "test"}
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert np.asarray(loaded[k]).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(loaded[k], v)


def test_load_never_unpickles(tmp_path, ensemble, monkeypatch):
    so.save(tmp_path / "e", ensemble)
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle", False))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    so.load(tmp_path / "e")
    assert calls == [False]
    monkeypatch.undo()
    # a hostile .npz holding an object array (which only unpickling could read) is refused
    np.savez(tmp_path / "evil.npz", payload=np.array([{"x": 1}], dtype=object))
    (tmp_path / "evil.json").write_text(json.dumps({"kind": "dict", "fields": {}, "config": {}, "key": None}))
    with pytest.raises(ValueError, match="pickle"):
        so.load(tmp_path / "evil")


def test_io_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="saveable"):
        so.save(tmp_path / "x", so.IsotropicNoise(1.0))
    np.savez(tmp_path / "odd.npz", a=np.ones(1))
    (tmp_path / "odd.json").write_text(json.dumps({"kind": "NoSuchResult", "fields": {}, "config": {}, "key": None}))
    with pytest.raises(ValueError, match="NoSuchResult"):
        so.load(tmp_path / "odd")


# ----------------------------------------------------------------------------- typed results
def test_nested_containers_round_trip(tmp_path):
    """Tuples, lists, dicts, strings, None, nan/inf floats, numpy scalars, numpy and jax arrays of
    any dtype, registered results nested inside each other: all come back as they went."""
    rate = so.escape_rate((np.array([1.0, 2.0, 3.0]), np.array([True, False, True])))
    tree = {"rates": (rate, rate), "names": ["a", "b"], "none": None, "flag": True, "n": 3, "nan": float("nan"),
            "inf": -float("inf"), "x": np.float64(0.25), "jax": jnp.arange(3), "strings": np.array(["u", "vw"]),
            "empty": np.zeros((2, 0)), "nested": {"deep": ({"z": np.arange(4, dtype=np.int8)},)}}
    round_trip(tmp_path, tree, "tree")
    round_trip(tmp_path, (np.ones(2), "s"), "tuple")


def test_save_refuses_what_it_cannot_restore(tmp_path):
    with pytest.raises(ValueError, match="register_result"):
        so.save(tmp_path / "x", {"noise": so.IsotropicNoise(1.0)})
    with pytest.raises(ValueError, match="keys"):
        so.save(tmp_path / "x", {1: np.ones(1)})
    with pytest.raises(ValueError, match="object array"):
        so.save(tmp_path / "x", {"o": np.array([{}], dtype=object)})


def test_escape_results_round_trip(tmp_path):
    kw = dict(n_paths=20, progress=False, max_steps_cap=400)
    st = so.experiments.escape_vs_sharpness([1.0, 2.0], key=jr.key(0), **kw)
    assert isinstance(round_trip(tmp_path, st, "study"), so.experiments.EscapeStudy)
    head = so.experiments.escape_headline(dict(n_lam=2, n_paths=20, dt=None), key=jr.key(1), progress=False)
    loaded = round_trip(tmp_path, head, "headline")
    assert loaded.table() == head.table() and "Kramers" in head.table()
    s2f = so.experiments.sharp_to_flat(key=jr.key(2), n_paths=20, n_steps=20, progress=False)
    round_trip(tmp_path, s2f, "s2f")
    rates = so.experiments.sgd_vs_sde_escape(key=jr.key(3), n_paths=20, max_steps=200, progress=False)
    loaded = round_trip(tmp_path, rates, "rates")
    assert loaded["SGD"] == rates["SGD"] and loaded.table() == rates.table()


def test_experiment_helper_results_round_trip(tmp_path):
    quad = so.landscapes.x_plus_sin()
    runs = so.experiments.gd_against_flow(quad, [2.5], [0.5, 0.25], t1=1.0)
    assert len(runs.ts) == 2 and runs.xs[1].shape == (5, 1)
    round_trip(tmp_path, runs, "gd_flow")
    h = jnp.diag(jnp.array([1.0, 4.0]))
    fs = so.experiments.quadratic_finite_sum(h, h, key=jr.key(0), n_examples=8)
    ens = so.simulate(so.SGD(fs, 0.1, 2), fs.info["minima"][0], key=jr.key(1), n_paths=20, n_steps=40)
    round_trip(tmp_path, so.experiments.path_moments(ens), "moments")
    round_trip(tmp_path, so.experiments.stationary_covariance(ens, burn_in=1.0), "cov")
    cfg = so.experiments.StationarySweepConfig(lrs=(0.1, 0.2), n_paths=20, n_steps=50, sde_dt=0.05, sde_time=2.0,
                                               burn_in=0.5)
    sweep = so.experiments.stationary_covariance_sweep(cfg, key=jr.key(2))
    loaded = round_trip(tmp_path, sweep, "sweep")
    assert loaded.config == cfg and loaded.table() == sweep.table() and sweep.sgd.diag.shape == (2, 2)
