"""Edge of stability: the tracked sharpness against dense eigenvalues, the training path
against the engine, the gradient flow against its closed form, and a tiny EoS run."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so


@pytest.fixture(scope="module")
def small_mlp():
    return so.problems.mlp_digits(key=jr.key(0), hidden=(6,), loss="mse", n_examples=64, n_classes=4)


def test_lambda_max_matches_dense_hessian(small_mlp):
    th = small_mlp.theta0
    want = np.linalg.eigvalsh(np.asarray(small_mlp.hessian(th))).max()
    lam, v = jax.jit(lambda t: so.curvature.lambda_max(small_mlp, t, key=jr.key(1), n_iter=40))(th)
    assert float(lam) == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(small_mlp.hvp(th, v), lam * v, atol=1e-6 * float(lam))


@pytest.mark.parametrize("kind", ["gd", "sgd"])
def test_training_path_is_the_engine_path(small_mlp, kind):
    th = small_mlp.theta0
    dyn = so.GD(small_mlp, 0.3) if kind == "gd" else so.SGD(small_mlp, 0.3, 8)
    key = jr.key(4)
    hist = so.stability.train_with_sharpness(dyn, th, key=key, n_steps=30, every=10, keep_params=True)
    ens = so.simulate(dyn, th, key=key, n_paths=1, n_steps=30, save_every=10)
    np.testing.assert_allclose(hist.params, ens.ys[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hist.loss, jax.vmap(small_mlp.loss)(ens.ys[0]), rtol=1e-10)
    dense = [np.linalg.eigvalsh(np.asarray(small_mlp.hessian(p))).max() for p in ens.ys[0]]
    np.testing.assert_allclose(hist.sharpness, dense, rtol=1e-6)
    assert hist.batch_size == (0 if kind == "gd" else 8)


def test_flow_and_departure_on_a_quadratic():
    """GD on ½θᵀHθ follows the flow exp(−Ht)θ₀ to O(lr) while lr λ < 2 and departs at once above."""
    h = jnp.diag(jnp.array([1.0, 4.0]))
    prob = so.landscapes.quadratic(h)
    th0 = jnp.array([1.0, 1.0])
    for lr, departs in ((0.01, False), (0.55, True)):
        hist = so.stability.train_with_sharpness(so.GD(prob, lr), th0, key=jr.key(0), n_steps=40, every=2, keep_params=True)
        np.testing.assert_allclose(hist.sharpness, 4.0, rtol=1e-10)
        fp = so.stability.gradient_flow_path(prob, th0, np.asarray(hist.steps) * lr, rtol=1e-10, atol=1e-12)
        exact = jnp.exp(-jnp.outer(fp.ts, jnp.diag(h))) * th0
        np.testing.assert_allclose(fp.params, exact, atol=1e-8)
        step, rel = so.stability.departure_step(hist, fp, tol=0.05)
        assert (step > 0) == departs, (lr, step, rel.max())


@pytest.mark.slow
def test_edge_of_stability_small():
    """A small network at a large lr: GD's sharpness climbs to 2/lr and stays within 10% of it
    over the last half, the flow's keeps rising past it, GD departs from the flow, and SGD
    with small batches settles below 2/lr."""
    jax.config.update("jax_enable_x64", False)  # as users run it; float64 only slows this down
    try:
        prob = so.problems.mlp_digits(key=jr.key(0), hidden=(16,), loss="mse", n_examples=128)
        out = so.experiments.edge_of_stability(prob, prob.theta0, key=jr.key(1), lrs=[0.6], n_steps=900, every=30,
                                   batch_sizes=[8], flow_max_steps=20_000)
    finally:
        jax.config.update("jax_enable_x64", True)
    r = np.asarray(out.gd[0].sharpness) * 0.6 / 2
    half = r[len(r) // 2:]
    assert np.all(np.abs(half - 1) < 0.1), half
    assert out.flow[0].sharpness[-1] > 1.1 * 2 / 0.6
    assert 0 < out.gd_departure[0] < 600
    assert out.sgd_median_ratio[0] < 0.9


def test_edge_of_stability_result_round_trip(tmp_path):
    from result_helpers import round_trip

    prob = so.problems.linear_regression(key=jr.key(0), n_examples=8, dim=2, noise_std=0.5)
    out = so.experiments.edge_of_stability(prob, prob.theta0, key=jr.key(1), lrs=[0.1, 0.2], n_steps=20, every=10,
                                           batch_sizes=[2], flow_max_steps=2000)
    assert len(out.gd) == len(out.flow) == 2 and len(out.sgd) == 1 and out.gd[0].params.shape == (3, 0)
    round_trip(tmp_path, out, "eos")
    s = round_trip(tmp_path, out.gd[0].summary(), "summary")
    assert s.lr == 0.1 and s.batch_size == 0 and -1 <= s.first_step_near <= 20
