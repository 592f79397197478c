"""Problem: losses, per-example gradients, HVPs, pytree parameters and the data problems,
checked against direct jax.grad / jax.hessian computations in float64."""

import socket

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so
from sde_opt import problems


def _logistic(key, n=7, d=3):
    """A small non-quadratic finite sum (binary logistic regression with a pytree of params)."""
    kx, ky = jr.split(key)
    data = {"x": jr.normal(kx, (n, d)), "y": (jr.uniform(ky, (n,)) < 0.5).astype(jnp.float64)}

    def loss(p, ex):
        z = ex["x"] @ p["w"] + p["b"]
        return jax.nn.softplus(z) - ex["y"] * z

    params = {"w": jnp.zeros(d), "b": jnp.zeros(())}
    return so.Problem(loss, data, params=params)


def test_loss_is_mean_of_example_losses(getkey):
    prob = _logistic(getkey())
    theta = jr.normal(getkey(), (prob.dim,))
    manual = np.mean([prob.loss_fn(prob.unravel(theta), jax.tree_util.tree_map(lambda a: a[i], prob.data))
                      for i in range(prob.n_examples)])
    np.testing.assert_allclose(prob.loss(theta), manual, rtol=1e-13)
    np.testing.assert_allclose(prob.per_example_losses(theta).mean(), prob.loss(theta), rtol=1e-13)


def test_per_example_grads_equal_python_loop(getkey):
    prob = _logistic(getkey())
    theta = jr.normal(getkey(), (prob.dim,))
    got = prob.per_example_grads(theta)
    assert got.shape == (prob.n_examples, prob.dim)
    for i in range(prob.n_examples):
        ex = jax.tree_util.tree_map(lambda a: a[i], prob.data)
        g = jax.grad(lambda th: prob.loss_fn(prob.unravel(th), ex))(theta)
        np.testing.assert_allclose(got[i], g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.mean(0), prob.grad(theta), rtol=1e-12, atol=1e-14)


def test_batch_grad_is_mean_over_indices_with_repeats(getkey):
    prob = _logistic(getkey())
    theta = jr.normal(getkey(), (prob.dim,))
    g = prob.per_example_grads(theta)
    idx = jnp.array([0, 3, 3, 6])  # a batch drawn with replacement may repeat an example
    np.testing.assert_allclose(prob.batch_grad(theta, idx), g[idx].mean(0), rtol=1e-12, atol=1e-14)


def test_hvp_equals_dense_hessian_times_v(getkey):
    prob = _logistic(getkey())
    theta = jr.normal(getkey(), (prob.dim,))
    dense = jax.hessian(prob.loss)(theta)
    np.testing.assert_allclose(prob.hessian(theta), dense, rtol=1e-12, atol=1e-14)
    for _ in range(3):
        v = jr.normal(getkey(), (prob.dim,))
        np.testing.assert_allclose(prob.hvp(theta, v), dense @ v, rtol=1e-12, atol=1e-14)


def test_hvp_without_data(getkey):
    prob = so.landscapes.styblinski_tang(4)
    theta = jr.normal(getkey(), (4,))
    v = jr.normal(getkey(), (4,))
    np.testing.assert_allclose(prob.hvp(theta, v), jax.hessian(prob.loss)(theta) @ v, rtol=1e-12)


def test_pytree_params_ravel_unravel_round_trip(getkey):
    params = [{"w": jr.normal(getkey(), (3, 4)), "b": jnp.arange(4.0)}, {"w": jr.normal(getkey(), (4, 1)),
                                                                        "b": jnp.zeros(1)}]
    prob = so.Problem(lambda p, ex: jnp.sum(p[0]["w"]) * ex, data=jnp.ones(5), params=params)
    flat, _ = jfu.ravel_pytree(params)
    assert prob.dim == 3 * 4 + 4 + 4 + 1
    np.testing.assert_array_equal(prob.theta0, flat)
    back = prob.unravel(prob.theta0)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    theta = jr.normal(getkey(), (prob.dim,))
    np.testing.assert_array_equal(jfu.ravel_pytree(prob.unravel(theta))[0], theta)


def test_dense_hessian_symmetric_and_matches_quadratic():
    h = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, -0.5], [0.0, -0.5, 1.0]])
    prob = so.landscapes.quadratic(h, jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(prob.hessian(jnp.zeros(3)), h, atol=1e-14)
    np.testing.assert_allclose(prob.grad(jnp.zeros(3)), -h @ jnp.array([1.0, 2.0, 3.0]), atol=1e-13)


# ------------------------------------------------------------------ data problems
def test_linear_regression_info_minimum_is_stationary():
    prob = problems.linear_regression(key=jr.key(0), n_examples=16, dim=2, l2=0.1)
    theta_star = prob.info["minima"][0]
    assert float(jnp.linalg.norm(eqx.filter_jit(prob.grad)(theta_star))) < 1e-12
    np.testing.assert_allclose(eqx.filter_jit(prob.hessian)(theta_star), prob.info["hessians_min"][0], rtol=1e-12,
                               atol=1e-14)
    assert prob.n_examples == 16 and prob.dim == 2
    assert prob.data["x"].shape == (16, 2) and prob.data["y"].shape == (16,)


def test_teacher_student_shapes(getkey):
    prob = problems.teacher_student(key=getkey(), n_examples=32, dim_in=5, hidden=6)
    assert prob.n_examples == 32
    assert prob.dim == 5 * 6 + 6 + 6 * 1 + 1
    assert eqx.filter_jit(prob.per_example_grads)(prob.theta0).shape == (32, prob.dim)
    assert np.isfinite(float(eqx.filter_jit(prob.loss)(prob.theta0)))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails: the digits data must come from disk."""
    problems.digits.cache_clear()

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
    problems.digits.cache_clear()


def test_digits_load_offline_with_expected_shapes(no_network, getkey):
    x, y = problems.digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-6)  # centred features
    assert set(np.unique(np.asarray(y))) == set(range(10))

    x3, y3 = problems.digits(100, n_classes=3, key=getkey())
    assert x3.shape == (100, 64) and int(y3.max()) < 3

    logreg = problems.logistic_regression_digits(n_examples=128)
    assert logreg.n_examples == 128 and logreg.dim == 64 * 10 + 10
    assert logreg.unravel(logreg.theta0)["w"].shape == (64, 10)
    np.testing.assert_allclose(eqx.filter_jit(logreg.loss)(logreg.theta0), np.log(10.0), rtol=1e-6)  # zero weights

    for kind in ("ce", "mse"):
        mlp = problems.mlp_digits(key=getkey(), hidden=(16,), loss=kind, n_examples=64, n_classes=4)
        assert mlp.n_examples == 64 and mlp.dim == 64 * 16 + 16 + 16 * 4 + 4
        assert eqx.filter_jit(mlp.per_example_grads)(mlp.theta0).shape == (64, mlp.dim)
        assert 0.0 <= problems.accuracy(mlp, mlp.theta0) <= 1.0


# ------------------------------------------------------------------ bad inputs
def test_problem_bad_inputs():
    with pytest.raises(ValueError, match="loss_fn"):
        so.Problem("not a function")
    with pytest.raises(ValueError, match="data"):
        so.Problem(lambda p, ex: ex["a"] @ p, data={"a": jnp.ones((3, 2)), "b": jnp.ones(4)})
    vector_loss = so.Problem(lambda th: th**2)
    with pytest.raises(ValueError, match="loss_fn"):
        vector_loss.loss(jnp.ones(2))
    with pytest.raises(ValueError, match="loss_fn"):
        vector_loss.check_params(jnp.ones(2))
    vector_example_loss = so.Problem(lambda th, ex: th * ex, data=jnp.ones(3))
    with pytest.raises(ValueError, match="loss_fn"):
        vector_example_loss.loss(jnp.ones(2))
    with pytest.raises(ValueError, match="data"):
        so.landscapes.strict_saddle().per_example_grads(jnp.ones(2))
    q = so.landscapes.quadratic(jnp.eye(2))
    with pytest.raises(ValueError, match="params"):
        q.check_params(jnp.ones(3))
    with pytest.raises(ValueError, match="params"):
        q.check_params(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="params"):
        q.check_params(jnp.array([1.0, jnp.nan]))


def test_data_problem_bad_inputs(getkey):
    with pytest.raises(ValueError, match="n_examples"):
        problems.linear_regression(key=getkey(), n_examples=0)
    with pytest.raises(ValueError, match="l2"):
        problems.linear_regression(key=getkey(), l2=-1.0)
    with pytest.raises(ValueError, match="noise_std"):
        problems.linear_regression(key=getkey(), noise_std=-0.5)
    with pytest.raises(ValueError, match="n_examples"):
        problems.digits(5000)
    with pytest.raises(ValueError, match="n_classes"):
        problems.digits(n_classes=11)
    with pytest.raises(ValueError, match="loss"):
        problems.mlp_digits(key=getkey(), loss="hinge")
