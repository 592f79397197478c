"""The iterative curvature estimators with their loop over products run from Python
(``loop="host"``, what ``"auto"`` picks for convolutions on CPU) give the numbers of the
compiled loop (``loop="device"``), and refuse to be traced."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so


@pytest.fixture(scope="module")
def problem():
    """Least squares on random data, d = 12: a full-rank Hessian with a spread spectrum."""
    kx, ky = jr.split(jr.key(5))
    x = jr.normal(kx, (40, 12)) * jnp.linspace(0.3, 2.0, 12)
    y = jr.normal(ky, (40,))
    return so.Problem(lambda th, ex: 0.5 * (ex["x"] @ th - ex["y"]) ** 2, {"x": x, "y": y}, params=jnp.zeros(12))


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_host_loop_is_the_device_loop(problem, which):
    theta = jnp.full(12, 0.1)
    kw = dict(key=jr.key(1), which=which, max_iter=12)
    dev = so.curvature.eigs(so.curvature.curvature_operator(problem, theta), 3, loop="device", **kw)
    host = so.curvature.eigs(so.curvature.curvature_operator(problem, theta), 3, loop="host", **kw)
    assert int(dev.n_iter) == int(host.n_iter)
    np.testing.assert_allclose(host.values, dev.values, rtol=1e-12)
    np.testing.assert_allclose(jnp.abs(jnp.sum(host.vectors * dev.vectors, axis=1)), 1.0, rtol=1e-10)
    # and both are the dense eigenvalues
    h = jax.hessian(problem.loss)(theta)
    dense = jnp.linalg.eigvalsh(h)
    want = dense[::-1][:3] if which == "largest" else dense[:3]
    np.testing.assert_allclose(host.values, want, rtol=1e-10)
    fixed = so.curvature.eigs(so.curvature.curvature_operator(problem, theta), 2, key=jr.key(2), max_iter=12,
                              fixed_steps=True, loop="host")
    np.testing.assert_allclose(fixed.values, dense[::-1][:2], rtol=1e-10)


@pytest.mark.parametrize("estimator", [so.curvature.Hutchinson(probe_batch=3), so.curvature.HutchPlusPlus()])
def test_trace_host_loop_is_the_device_loop(problem, estimator):
    theta = jnp.zeros(12)
    kw = dict(key=jr.key(3), n_probes=10, estimator=estimator)
    dev = so.hessian_trace(problem, theta, loop="device", **kw)
    host = so.hessian_trace(problem, theta, loop="host", **kw)
    np.testing.assert_allclose(host.samples, dev.samples, rtol=1e-12)
    np.testing.assert_allclose(host.stderr, dev.stderr, rtol=1e-10)


def test_density_host_loop_is_the_device_loop(problem):
    kw = dict(key=jr.key(4), n_probes=3, n_iter=8)
    dev = so.curvature.hessian_density(problem, jnp.zeros(12), loop="device", **kw)
    host = so.curvature.hessian_density(problem, jnp.zeros(12), loop="host", **kw)
    np.testing.assert_allclose(host.nodes, dev.nodes, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host.weights, dev.weights, rtol=1e-8, atol=1e-12)


def test_loop_argument_is_checked(problem):
    op = so.curvature.curvature_operator(problem, jnp.zeros(12))
    assert so.curvature.resolve_loop("auto", op) == "device"  # no convolution: one compiled loop
    with pytest.raises(ValueError, match='loop must be "auto", "device" or "host"'):
        so.hessian_eigs(problem, jnp.zeros(12), 1, key=jr.key(0), loop="gpu")
    traced = eqx.filter_jit(lambda th: so.hessian_eigs(problem, th, 1, key=jr.key(0), loop="host")[0])
    with pytest.raises(ValueError, match="cannot be traced"):
        traced(jnp.zeros(12))
    # auto under jit is the compiled loop
    auto = eqx.filter_jit(lambda th: so.hessian_eigs(problem, th, 1, key=jr.key(0))[0])(jnp.zeros(12))
    np.testing.assert_allclose(auto, so.hessian_eigs(problem, jnp.zeros(12), 1, key=jr.key(0), loop="device")[0],
                               rtol=1e-12)


def test_auto_picks_the_host_loop_for_convolutions_on_cpu(conv_problem):
    """A convolutional model: the auto choice must give the host loop's numbers on CPU."""
    prob = conv_problem
    kw = dict(key=jr.key(0), max_iter=40)
    auto = so.curvature.eigs(so.curvature.curvature_operator(prob, prob.theta0), 1, **kw)
    host = so.curvature.eigs(so.curvature.curvature_operator(prob, prob.theta0), 1, loop="host", **kw)
    dense = jnp.linalg.eigvalsh(jax.hessian(prob.loss)(prob.theta0))[-1]
    op = so.curvature.curvature_operator(prob, prob.theta0)
    cpu = jax.default_backend() == "cpu"
    assert so.curvature.resolve_loop("auto", op) == ("host" if cpu else "device")
    assert so.curvature.resolve_loop("device", op) == "device"
    np.testing.assert_allclose(auto.values, host.values, rtol=1e-12)
    np.testing.assert_allclose(auto.values[0], dense, rtol=1e-8)


def test_cheap_convolutions_stay_in_the_compiled_loop(tiny_conv_problem):
    """Under 1e6 FLOPs of convolution a product is cheaper inside XLA's loop than called
    from Python, slow path and all: auto keeps the device loop."""
    op = so.curvature.curvature_operator(tiny_conv_problem, tiny_conv_problem.theta0)
    assert so.curvature.resolve_loop("auto", op) == "device"
    step = so.SGD(tiny_conv_problem, 0.05, 4)
    ens = so.simulate(step, tiny_conv_problem.theta0, key=jr.key(1), n_paths=3, n_steps=2)
    dev = so.simulate(step, tiny_conv_problem.theta0, key=jr.key(1), n_paths=3, n_steps=2, loop="device")
    np.testing.assert_allclose(ens.ys, dev.ys, rtol=0, atol=0)
