"""Integrators: how the engine steps is a value. Euler–Maruyama with substeps against
hand-computed fine steps and the exact law of the fine chain, the coupling of a discrete
optimizer to a refined model, and argument checks."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sde_opt as so
from conftest import mean_and_se


def _ou(lam=1.5, sigma2=0.8, lr=0.1):
    """dθ = −λθ dt + √lr σ dW in 1-d: ``SGDSDE`` of ``½λθ²`` with isotropic noise σ²."""
    prob = so.landscapes.quadratic(jnp.array([[lam]]))
    return so.SGDSDE(prob, lr=lr, batch_size=1, noise=so.IsotropicNoise(sigma2))


@pytest.mark.parametrize("m", [1, 4])
def test_substeps_are_fine_euler_maruyama_steps_computed_by_hand(m):
    prob = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    sde = so.SGDSDE(prob, lr=0.05, batch_size=1, noise=so.HessianNoise())
    key, n_paths, n_steps = jr.key(7), 3, 4
    got = so.observe(sde, jnp.ones(2), so.SavePositions(), key=key, n_paths=n_paths, n_steps=n_steps,
                     integrator=so.EulerMaruyama(substeps=m))["ys"]
    h = 0.05 / m
    for i in range(n_paths):
        theta = jnp.ones(2)
        for j in range(n_steps):
            step_key = jr.fold_in(jr.fold_in(key, i), j)
            for s in range(m):
                z = jr.normal(step_key if m == 1 else jr.fold_in(step_key, s), (2,))
                t = j * 0.05 + s * h
                theta = theta + h * sde.drift(t, theta) + jnp.sqrt(h) * sde.diffusion_apply(t, theta, z)
            np.testing.assert_allclose(got[i, j + 1], theta, rtol=1e-13, atol=1e-15)


def test_substeps_one_is_simulate_and_the_dynamics_own_step():
    prob = so.landscapes.quadratic(jnp.eye(2))
    sde = so.SGDSDE(prob, lr=0.05, batch_size=1, noise=so.IsotropicNoise(1.0))
    kw = dict(key=jr.key(1), n_paths=5, n_steps=6)
    ens = so.simulate(sde, jnp.ones(2), **kw)
    got = so.observe(sde, jnp.ones(2), so.SavePositions(), integrator=so.EulerMaruyama(), **kw)["ys"]
    np.testing.assert_array_equal(got, ens.ys)
    # per path, the continuous model's step is the same Euler–Maruyama step
    own = so.observe(sde, jnp.ones(2), so.SavePositions(), integrator=so.OwnStep(), **kw)["ys"]
    np.testing.assert_allclose(own, ens.ys, rtol=1e-14)


@pytest.mark.parametrize("d", [1, 3, 4, 8, 16, 37, 100])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_batched_normals_are_the_per_path_draws(d, dtype):
    """The engine's batched normals (a fused threefry for some sizes, jax.random's kernel for
    others) are the numbers each path's own step draws from ``fold_in(fold_in(key, i), j)``."""
    prob = so.landscapes.quadratic(jnp.eye(d, dtype=dtype))
    sde = so.SGDSDE(prob, lr=0.05, batch_size=1, noise=so.IsotropicNoise(1.0))
    kw = dict(key=jr.key(3), n_paths=7, n_steps=3)
    y0 = jnp.ones(d, dtype)
    batched = so.observe(sde, y0, so.SavePositions(), integrator=so.EulerMaruyama(), **kw)["ys"]
    own = so.observe(sde, y0, so.SavePositions(), integrator=so.OwnStep(), **kw)["ys"]
    assert batched.dtype == dtype
    np.testing.assert_allclose(batched, own, rtol=4 * float(jnp.finfo(dtype).eps), atol=0)


@pytest.mark.parametrize("m", [1, 8])
def test_substeps_have_the_law_of_the_fine_chain(m):
    """Euler–Maruyama with step h = lr/m on the OU process is the AR(1) chain
    ``θ ← aθ + σ√(lr·h) z``, ``a = 1 − λh``: mean ``a^K θ0``, variance
    ``σ² lr h (1 − a^{2K})/(1 − a²)`` after ``K = m·n_steps`` substeps."""
    lam, sigma2, lr, n_steps, n = 1.5, 0.8, 0.1, 20, 20_000
    sde = _ou(lam, sigma2, lr)
    out = so.observe(sde, jnp.ones(1), so.SavePositions(every=n_steps), key=jr.key(11), n_paths=n,
                     n_steps=n_steps, integrator=so.EulerMaruyama(substeps=m))
    x = out["ys"][:, -1, 0]
    h, k = lr / m, m * n_steps
    a = 1 - lam * h
    mean, var = a**k, sigma2 * lr * h * (1 - a ** (2 * k)) / (1 - a**2)
    m_hat, se = mean_and_se(x)
    assert abs(float(m_hat) - mean) < 4 * float(se)
    v_se = var * np.sqrt(2.0 / (n - 1))
    assert abs(float(jnp.var(x, ddof=1)) - var) < 4 * v_se
    # the exact OU law is approached as m grows: exp(−λT) for the mean
    if m == 8:
        assert abs(mean - np.exp(-lam * lr * n_steps)) < 0.01


def test_coupled_paths_are_the_engine_with_integrator_values():
    prob = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    sde = so.SGDSDE(prob, lr=0.05, batch_size=1, noise=so.IsotropicNoise(1.0))
    opt = so.optimizers.NoisyOptax(prob, optax.sgd(0.05), 1, so.IsotropicNoise(1.0), dt=0.05)
    kw = dict(key=jr.key(2), n_paths=6, n_steps=8)
    disc, cont = so.optimizers.coupled_paths(opt, sde, jnp.ones(2), refine=4, **kw)
    np.testing.assert_array_equal(
        cont.ys, so.observe(sde, jnp.ones(2), so.SavePositions(), integrator=so.EulerMaruyama(4), **kw)["ys"])
    np.testing.assert_array_equal(
        disc.ys, so.observe(opt, jnp.ones(2), so.SavePositions(), integrator=so.SummedNormals(4), **kw)["ys"])
    # refine=1: each side is simulate's own run, and NoisyOptax(sgd) is the EM step of the SDE
    disc1, cont1 = so.optimizers.coupled_paths(opt, sde, jnp.ones(2), refine=1, **kw)
    np.testing.assert_array_equal(cont1.ys, so.simulate(sde, jnp.ones(2), **kw).ys)
    np.testing.assert_array_equal(disc1.ys, so.simulate(opt, jnp.ones(2), **kw).ys)
    np.testing.assert_allclose(disc1.ys, cont1.ys, rtol=1e-12, atol=1e-14)
    # with substeps the optimizer sees the summed increment: the paths stay close
    assert float(jnp.max(jnp.abs(disc.final - cont.final))) < 0.05


def test_integrators_check_the_dynamics():
    lin = so.problems.linear_regression(key=jr.key(0), n_examples=8, dim=2)
    sgd = so.SGD(lin, 0.1, 2)
    kw = dict(key=jr.key(0), n_paths=2, n_steps=3)
    with pytest.raises(ValueError, match="EulerMaruyama steps continuous models"):
        so.observe(sgd, jnp.zeros(2), so.SavePositions(), integrator=so.EulerMaruyama(), **kw)
    with pytest.raises(ValueError, match="cannot be driven by given normals"):
        so.observe(sgd, jnp.zeros(2), so.SavePositions(), integrator=so.SummedNormals(2), **kw)
    with pytest.raises(ValueError, match="substeps must be >= 1"):
        so.EulerMaruyama(substeps=0)
    with pytest.raises(ValueError, match="substeps must be a positive int"):
        so.SummedNormals(substeps=1.5)
