"""Tracking curvature and noise during an optax run (float64)."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from curvature_helpers import count_compiles

import sde_opt as so


def test_track_gd_on_a_quadratic_matches_closed_form(getkey):
    lam = jnp.array([4.0, 2.5, 1.0, 0.5])
    prob = so.landscapes.quadratic(jnp.diag(lam))
    theta0 = jnp.ones(4)
    hist = so.curvature.track(prob, optax.sgd(0.1), theta0, key=getkey(), n_steps=30, every=10, k=2, n_probes=4)
    assert hist.step.tolist() == [0, 10, 20, 30]
    np.testing.assert_allclose(hist.sharpness, np.tile([4.0, 2.5], (4, 1)), rtol=1e-10)
    np.testing.assert_allclose(hist.trace_h, 8.0, rtol=1e-12)  # Rademacher probes: exact on a diagonal
    expected = (1 - 0.1 * np.asarray(lam)) ** 30
    np.testing.assert_allclose(hist.final, expected, rtol=1e-12)
    loss = [0.5 * np.sum(np.asarray(lam) * (1 - 0.1 * np.asarray(lam)) ** (2 * s)) for s in (0, 10, 20, 30)]
    np.testing.assert_allclose(hist.loss, loss, rtol=1e-12)
    assert np.all(np.isnan(hist.ratio))  # no data: no noise diagnostics


OPT = optax.sgd(0.3)  # optax optimizers are closures: reuse the value to reuse the compilation


@pytest.fixture(scope="module")
def run():
    prob = so.problems.mlp_digits(key=jr.key(1), hidden=(4,), n_examples=64)
    hist = so.curvature.track(prob, OPT, prob.theta0, key=jr.key(2), n_steps=60, every=15, batch_size=8, k=2, n_probes=8)
    return prob, hist


def test_track_minibatch_mlp(run):
    prob, hist = run
    cols = hist.columns()
    assert {"step", "loss", "sharpness_1", "sharpness_2", "ratio", "overlap", "slope", "lanczos_iters"} <= set(cols)
    assert {len(v) for v in cols.values()} == {5}
    assert cols["loss"][-1] < cols["loss"][0]
    # the last record is measured at the final parameters: same numbers as the one-off functions
    vals, _ = so.hessian_eigs(prob, hist.final, 2, key=jr.key(0))
    np.testing.assert_allclose(hist.sharpness[-1], vals, rtol=1e-6)
    assert float(hist.trace_d[-1]) == pytest.approx(float(so.curvature.noise_trace(prob, hist.final)), rel=1e-10)
    np.testing.assert_allclose(hist.noise_values[-1], so.noise_eigs(prob, hist.final, 2)[0], rtol=1e-6)
    # warm starts: later records need fewer Lanczos steps than the cold first one
    assert np.mean(hist.lanczos_iters[1:]) < hist.lanczos_iters[0]


def test_track_trains_path_zero_of_the_engine(run):
    """The loop's training steps are path 0 of so.simulate with the same key (the engine's
    key scheme), so the final parameters are the engine's."""
    prob, hist = run
    ens = so.simulate(so.OptaxDynamics(prob, OPT, 8), prob.theta0, key=jr.key(2), n_paths=1, n_steps=60)
    np.testing.assert_allclose(hist.final, ens.ys[0, -1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hist.loss[-1], prob.loss(ens.ys[0, -1]), rtol=1e-10)


def test_track_compiles_once_and_saves(run, tmp_path):
    prob, hist = run
    theta, key = prob.theta0 + 0.01, jr.key(4)
    with count_compiles() as c:
        so.curvature.track(prob, OPT, theta, key=key, n_steps=60, every=15, batch_size=8, k=2, n_probes=8)
    assert c.n == 0, c.names
    so.save(tmp_path / "hist", hist)
    back, _ = so.load(tmp_path / "hist")
    np.testing.assert_allclose(back.sharpness, hist.sharpness)


def test_track_bad_input(run):
    prob, _ = run
    with pytest.raises(ValueError, match="every=100 exceeds n_steps=10"):
        so.curvature.track(prob, optax.sgd(0.1), prob.theta0, key=jr.key(0), n_steps=10, every=100)
    with pytest.raises(ValueError, match="exceeds the dimension"):
        so.curvature.track(prob, optax.sgd(0.1), prob.theta0, key=jr.key(0), n_steps=10, every=5, k=10_000)
    with pytest.raises(ValueError, match="optax GradientTransformation"):
        so.curvature.track(prob, "sgd", prob.theta0, key=jr.key(0), n_steps=10, every=5)
    with pytest.raises(ValueError, match="does not exist"):
        so.curvature.track(prob, optax.sgd(0.1), prob.theta0, key=jr.key(0), n_steps=10, every=5, group="2")
