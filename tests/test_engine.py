"""The engine: reproducibility (chunk sizes, path prefixes, save_every), time grids,
divergence handling and argument checks of so.simulate and the Ensemble result."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so


def _dynamics(name):
    lin = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
    quad = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    st = so.landscapes.styblinski_tang(2)
    return {
        "sgd_no_replacement": lambda: so.SGD(lin, 0.1, 3, replacement=False),
        "shuffled_sgd": lambda: so.ShuffledSGD(lin, 0.1, 3),
        "sde_constant_noise": lambda: so.SGDSDE(quad, 0.1, 3, so.ConstantNoise(jnp.array([[1.0, 0.3], [0.3, 0.5]]))),
        "sde_hessian_noise": lambda: so.SGDSDE(st, 0.01, 1, so.HessianNoise(), order=2),
        "sde_minibatch_order2_no_replacement": lambda: so.SGDSDE(lin, 0.1, 3, so.MinibatchNoise(), order=2,
                                                                 replacement=False),
        "gd_data": lambda: so.GD(lin, 0.1),
    }[name]()


_BITWISE = ["sgd_no_replacement", "shuffled_sgd", "sde_constant_noise", "sde_hessian_noise"]
# Full-batch gradients over data are GEMMs over the example axis whose CPU kernel (and so the
# summation order) XLA picks by the chunk's shape: the same random draws, values equal to rounding.
_ROUNDING = ["sde_minibatch_order2_no_replacement", "gd_data"]


@functools.lru_cache(maxsize=None)
def _chunked_runs(name):
    dyn = _dynamics(name)
    kw = dict(key=jr.key(1), n_paths=7, n_steps=12, save_every=4)
    y0 = jnp.array([0.5, -0.5])
    return [so.simulate(dyn, y0, chunk_size=chunk, **kw) for chunk in (None, 1, 3)]


@pytest.mark.parametrize("name", _BITWISE)
def test_results_do_not_depend_on_chunk_size(name):
    """Path i uses fold_in(key, i): chunk_size = 1, 3 and the default give the same bits."""
    ref, *others = _chunked_runs(name)
    for ens in others:
        np.testing.assert_array_equal(ens.ys, ref.ys)
        np.testing.assert_array_equal(ens.diverged, ref.diverged)
        np.testing.assert_array_equal(ens.ts, ref.ts)


@pytest.mark.parametrize("name", _ROUNDING)
def test_chunk_size_changes_nothing_but_rounding(name):
    """Where the bits differ, the draws are still the same: agreement to 1e-13 relative
    (a different draw would move the paths by O(1e-1))."""
    ref, *others = _chunked_runs(name)
    for ens in others:
        np.testing.assert_allclose(ens.ys, ref.ys, rtol=1e-13, atol=1e-15)


@pytest.fixture(scope="module")
def linreg():
    return so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)


def test_path_i_depends_only_on_key_and_i(linreg):
    dyn = so.SGDSDE(linreg, 0.1, 2, so.MinibatchNoise())
    a = so.simulate(dyn, jnp.zeros(2), key=jr.key(2), n_paths=5, n_steps=6)
    b = so.simulate(dyn, jnp.zeros(2), key=jr.key(2), n_paths=9, n_steps=6)
    np.testing.assert_array_equal(a.ys, b.ys[:5])
    again = so.simulate(dyn, jnp.zeros(2), key=jr.key(2), n_paths=5, n_steps=6)
    np.testing.assert_array_equal(a.ys, again.ys)
    other = so.simulate(dyn, jnp.zeros(2), key=jr.key(3), n_paths=5, n_steps=6)
    assert not np.any(np.all(np.asarray(other.ys[:, 1:] == a.ys[:, 1:]), axis=(1, 2)))
    assert len({tuple(np.asarray(row)) for row in a.final}) == 5  # paths differ from each other


def test_save_every_subsamples_the_same_path(linreg):
    dyn = so.SGD(linreg, 0.05, 2)
    full = so.simulate(dyn, jnp.ones(2), key=jr.key(4), n_paths=3, n_steps=10)
    sub = so.simulate(dyn, jnp.ones(2), key=jr.key(4), n_paths=3, n_steps=10, save_every=3)
    assert full.ys.shape == (3, 11, 2) and sub.ys.shape == (3, 10 // 3 + 1, 2)
    np.testing.assert_array_equal(sub.ys, full.ys[:, [0, 3, 6, 9]])
    np.testing.assert_allclose(sub.ts, [0.0, 0.15, 0.3, 0.45], rtol=1e-14)
    np.testing.assert_allclose(full.ts, 0.05 * np.arange(11), rtol=1e-14)


def test_time_grid_and_first_row(linreg):
    dyn = so.SGDSDE(linreg, 0.2, 2, so.MinibatchNoise())
    ens = so.simulate(dyn, jnp.array([0.3, 0.7]), key=jr.key(5), n_paths=3, n_steps=8)
    np.testing.assert_allclose(ens.ts, 0.2 * np.arange(9), rtol=1e-14)  # default dt = lr
    np.testing.assert_array_equal(ens.ys[:, 0], np.broadcast_to(jnp.array([0.3, 0.7]), (3, 2)))
    starts = jnp.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    fine = so.simulate(dyn, starts, key=jr.key(5), n_paths=3, n_steps=8, dt=0.05, save_every=2)
    np.testing.assert_allclose(fine.ts, 0.1 * np.arange(5), rtol=1e-14)  # SDE time = steps × dt
    np.testing.assert_array_equal(fine.ys[:, 0], starts)  # per-path starts


def test_ensemble_statistics(linreg):
    ens = so.simulate(so.SGD(linreg, 0.1, 2), jnp.zeros(2), key=jr.key(6), n_paths=50, n_steps=5)
    ys = np.asarray(ens.ys)
    np.testing.assert_allclose(ens.mean(), ys.mean(0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ens.covariance()[-1], np.cov(ys[:, -1].T), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ens.final, ys[:, -1])
    assert ens.n_paths == 50 and ens.n_diverged == 0


# ------------------------------------------------------------------ divergence
def test_diverging_paths_are_recorded_not_raised():
    """GD with lr·λ = 1·4 > 2: the second coordinate is multiplied by −3 each step and
    overflows after ~650 steps; paths started with it at 0 stay finite."""
    quad = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 4.0])))
    starts = jnp.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [-2.0, 1e-3]])
    ens = so.simulate(so.GD(quad, 1.0), starts, key=jr.key(0), n_paths=4, n_steps=1000)
    np.testing.assert_array_equal(ens.diverged, [True, False, False, True])
    assert ens.n_diverged == 2
    assert not np.all(np.isfinite(np.asarray(ens.ys[0, -1])))
    assert np.all(np.isfinite(np.asarray(ens.ys[1:3])))
    with pytest.raises(ValueError, match="drop_diverged"):
        ens.mean()
    with pytest.raises(ValueError, match="drop_diverged"):
        ens.covariance()
    np.testing.assert_allclose(ens.mean(drop_diverged=True), np.asarray(ens.ys[1:3]).mean(0))
    assert np.all(np.isfinite(np.asarray(ens.covariance(drop_diverged=True))))


def test_diverging_sgd_on_data_does_not_raise(linreg):
    """Real SGD with a far too large lr overflows to inf/nan inside the batch gradients;
    that is data (ys non-finite, diverged true), not an exception."""
    ens = so.simulate(so.SGD(linreg, 5.0, 2), jnp.ones(2), key=jr.key(7), n_paths=6, n_steps=800)
    assert ens.n_diverged == 6
    assert not np.any(np.isfinite(np.asarray(ens.final)).all(-1))
    with pytest.raises(ValueError, match="drop_diverged"):
        ens.mean()


# ------------------------------------------------------------------ bad inputs
def test_simulate_bad_inputs(linreg):
    quad = so.landscapes.quadratic(jnp.eye(2))
    sde = so.SGDSDE(quad, 0.1, 1, so.IsotropicNoise(1.0))
    key = jr.key(0)
    ok = dict(key=key, n_paths=2, n_steps=4)

    def raises(match, dyn=sde, y0=jnp.ones(2), **kw):
        with pytest.raises(ValueError, match=match):
            so.simulate(dyn, y0, **{**ok, **kw})

    raises("y0", y0=jnp.ones(3))  # wrong d
    raises("y0", y0=jnp.ones((2, 3)))  # wrong d, per-path
    raises("y0", y0=jnp.ones((3, 2)))  # wrong number of rows
    raises("y0", y0=jnp.ones((2, 2, 2)))
    raises("y0", y0=jnp.ones(()))
    raises("y0", y0=jnp.array([1.0, jnp.nan]))
    raises("y0", y0=jnp.array([1.0, jnp.inf]))
    raises("y0", y0=jnp.array([[1.0, 1.0], [jnp.nan, 0.0]]))
    raises("n_paths", n_paths=0)
    raises("n_paths", n_paths=2.0)
    raises("n_steps", n_steps=0)
    raises("save_every", save_every=5)
    raises("save_every", save_every=0)
    raises("chunk_size", chunk_size=0)
    raises("dt", dt=0.0)
    raises("dt", dt=-0.1)
    raises("dt", dt=float("nan"))
    raises("dt", dyn=so.GradientFlow(quad))  # no natural step
    raises("dt", dyn=so.GD(quad, 0.1), dt=0.05)  # discrete: only its own step
    raises("dt", dyn=so.NoisyGD(quad, 0.1, 1, so.IsotropicNoise(1.0)), dt=0.01)
    raises("dt", dyn=so.SGD(linreg, 0.1, 2), dt=0.2)
    raises("dyn", dyn=so.GradientFlow)
    raises("dyn", dyn=lambda th: th)
    raises("loss_fn", dyn=so.GradientFlow(so.Problem(lambda th: th**2)), dt=0.1)  # a loss that returns a vector
    # the natural step is accepted when passed explicitly
    so.simulate(so.GD(quad, 0.1), jnp.ones(2), dt=0.1, **ok)


_DEVICE_SCRIPT = """
import sys, jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, jax.random as jr, numpy as np, sde_opt as so

def run():
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
    quad = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    ys = [so.simulate(dyn, jnp.ones(2), key=jr.key(1), n_paths=10, n_steps=6, chunk_size=6).ys
          for dyn in (so.SGD(prob, 0.1, 3), so.SGDSDE(quad, 0.1, 1, so.IsotropicNoise(1.0)))]
    return np.stack([np.asarray(y) for y in ys])

if __name__ == "__main__":
    np.save(sys.argv[1], run())
    print(jax.device_count())
"""


@pytest.mark.slow
def test_same_numbers_on_four_devices(tmp_path):
    """Sharding the path axis over 4 (forced host) devices gives the same bits as this
    process (one device): chunks of 6 paths become 8 padded paths, 2 per device."""
    script = tmp_path / "devices.py"
    script.write_text(_DEVICE_SCRIPT)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "ys.npy")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == "4"
    namespace = {}
    exec(compile(_DEVICE_SCRIPT, "devices.py", "exec"), namespace)  # the same code, in this process
    import jax

    assert jax.device_count() != 4
    np.testing.assert_array_equal(np.load(tmp_path / "ys.npy"), namespace["run"]())


def test_key_and_dynamics_kind_are_checked():
    quad = so.landscapes.quadratic(jnp.eye(2))
    dyn = so.SGDSDE(quad, 0.1, 1, so.IsotropicNoise(1.0))
    for bad in (None, 0, "seed"):
        with pytest.raises(ValueError, match="key"):
            so.simulate(dyn, jnp.ones(2), key=bad, n_paths=2, n_steps=2)
        with pytest.raises(ValueError, match="key"):
            so.first_exit(dyn, jnp.ones(2), so.Ball(jnp.zeros(2), 5.0), key=bad, n_paths=2, max_steps=2)
    with pytest.raises(ValueError, match="discrete"):
        so.solve_diffrax(so.GD(quad, 0.1), jnp.ones(2), key=jr.key(0), n_paths=2, t1=1.0)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_host_loop_is_the_compiled_loop(linreg, chunk_size):
    """``loop="host"`` (Python drives the steps; what "auto" picks for convolutions on CPU)
    gives the compiled loop's paths, exit times and early stop."""
    sgd = so.SGD(linreg, 0.05, 4)
    kw = dict(key=jr.key(8), n_paths=5, n_steps=12)
    y0 = jnp.zeros(linreg.dim)
    dev = so.simulate(sgd, y0, save_every=3, loop="device", **kw)
    host = so.simulate(sgd, y0, save_every=3, loop="host", chunk_size=chunk_size, **kw)
    np.testing.assert_allclose(host.ys, dev.ys, rtol=1e-12, atol=1e-14)
    region = so.Ball(linreg.info["minima"][0], 0.6 * float(jnp.linalg.norm(linreg.info["minima"][0])))
    obs = so.FirstExit(region, early_stop=True)
    ex_dev = so.observe(sgd, y0, obs, loop="device", **kw)
    ex_host = so.observe(sgd, y0, obs, loop="host", chunk_size=chunk_size, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(ex_host), jax.tree_util.tree_leaves(ex_dev)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match='loop must be "auto", "device" or "host"'):
        so.simulate(sgd, y0, loop="cpu", **kw)


def test_convolutional_steps_run_from_the_host_on_cpu(conv_problem):
    prob = conv_problem
    sgd = so.SGD(prob, 0.05, 4)
    kw = dict(key=jr.key(1), n_paths=3, n_steps=4)
    auto = so.simulate(sgd, prob.theta0, **kw)
    dev = so.simulate(sgd, prob.theta0, loop="device", **kw)
    np.testing.assert_allclose(auto.ys, dev.ys, rtol=1e-12)
    cpu = jax.default_backend() == "cpu"
    got = so.curvature.resolve_loop("auto", so.curvature.curvature_operator(prob, prob.theta0))
    assert got == ("host" if cpu else "device")
