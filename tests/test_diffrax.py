"""The diffrax bridge: so.solve_diffrax agrees in distribution with so.simulate, adaptive
ODE solves match closed forms, and the terms work with diffrax directly."""

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from conftest import cov_and_se, mean_and_se
from curvature_helpers import count_compiles

import sde_opt as so

_H = jnp.array([[2.0, 0.5], [0.5, 1.0]])
_D = jnp.array([[1.0, 0.3], [0.3, 0.5]])


def test_diffrax_and_engine_agree_in_distribution():
    """The same Euler–Maruyama scheme (dt = 0.05, t1 = 1) through diffrax (one
    VirtualBrownianTree per path) and through the engine, 4,000 paths each:
    * final means within 5 SE of each other, SE = √(s²_a/n + s²_b/n);
    * final covariance entries within 5 SE, SE = √(SE_a² + SE_b²) from conftest.cov_and_se;
    * both within 5 SE of the exact moments of the Euler–Maruyama chain
      (mean (I − dt H)^k y0, covariance from the discrete recursion);
    * two-sample KS tests on each coordinate do not reject (p > 1e-3, fixed keys)."""
    quad = so.landscapes.quadratic(_H)
    lr, dt, n = 0.2, 0.05, 4000
    dyn = so.SGDSDE(quad, lr, 1, so.ConstantNoise(_D))
    y0 = jnp.array([1.0, -1.0])
    ref = so.solve_diffrax(dyn, y0, key=jr.key(0), n_paths=n, t1=1.0, ts=jnp.array([0.0, 1.0]), dt0=dt)
    ens = so.simulate(dyn, y0, key=jr.key(1), n_paths=n, n_steps=20, dt=dt, save_every=20)
    assert ref.ys.shape == (n, 2, 2) and not bool(ref.diverged.any())
    a, b = ref.final, ens.final
    (ma, sa), (mb, sb) = mean_and_se(a), mean_and_se(b)
    assert np.all(np.abs(ma - mb) <= 5 * np.sqrt(sa**2 + sb**2))
    (ca, cse_a), (cb, cse_b) = cov_and_se(a), cov_and_se(b)
    assert np.all(np.abs(ca - cb) <= 5 * np.sqrt(cse_a**2 + cse_b**2))
    step = np.eye(2) - dt * np.asarray(_H)
    m, c = np.asarray(y0), np.zeros((2, 2))
    for _ in range(20):
        m, c = step @ m, step @ c @ step.T + dt * lr * np.asarray(_D)
    for mean, se, cov, cse in ((ma, sa, ca, cse_a), (mb, sb, cb, cse_b)):
        assert np.all(np.abs(mean - m) <= 5 * se)
        assert np.all(np.abs(cov - c) <= 5 * cse)
    for i in range(2):
        assert scipy.stats.ks_2samp(np.asarray(a[:, i]), np.asarray(b[:, i])).pvalue > 1e-3


@pytest.mark.slow
def test_diffrax_and_engine_agree_with_state_dependent_noise():
    """MinibatchNoise on linear regression (the diffusion depends on θ and goes through a
    lineax FunctionLinearOperator in diffrax): final means and variances within 5 SE."""
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
    dyn = so.SGDSDE(prob, 0.2, 2, so.MinibatchNoise())
    n = 2000
    ref = so.solve_diffrax(dyn, jnp.zeros(2), key=jr.key(3), n_paths=n, t1=1.0, ts=jnp.array([0.0, 1.0]), dt0=0.05)
    ens = so.simulate(dyn, jnp.zeros(2), key=jr.key(4), n_paths=n, n_steps=20, dt=0.05, save_every=20)
    (ma, sa), (mb, sb) = mean_and_se(ref.final), mean_and_se(ens.final)
    assert np.all(np.abs(ma - mb) <= 5 * np.sqrt(sa**2 + sb**2))
    (ca, cse_a), (cb, cse_b) = cov_and_se(ref.final), cov_and_se(ens.final)
    assert np.all(np.abs(ca - cb) <= 5 * np.sqrt(cse_a**2 + cse_b**2))
    assert np.all(jnp.diag(ca) > 10 * jnp.diag(cse_a))  # there is noise to compare


def test_adaptive_gradient_flow_matches_closed_form():
    """Gradient flow on a quadratic is θ(t) = θ* + exp(−Ht)(θ0 − θ*); Tsit5 with
    PIDController(1e-6, 1e-8) gets within 1e-5; a user-chosen Dopri5 solve of dyn.terms()
    (the documented route to any diffrax solver) too."""
    minimum = jnp.array([0.5, -0.2])
    quad = so.landscapes.quadratic(_H, minimum)
    flow = so.GradientFlow(quad)
    y0 = jnp.array([1.0, -1.0])
    ts = jnp.linspace(0.0, 2.0, 11)
    sol = so.solve_diffrax(flow, y0, key=jr.key(0), n_paths=2, t1=2.0, ts=ts)
    exact = np.stack([np.asarray(minimum) + scipy.linalg.expm(-np.asarray(_H) * t) @ np.asarray(y0 - minimum)
                      for t in np.asarray(ts)])
    np.testing.assert_allclose(sol.ys[0], exact, atol=1e-5)
    np.testing.assert_array_equal(sol.ys[0], sol.ys[1])  # an ODE: no randomness
    np.testing.assert_allclose(sol.ts, ts)
    out = dfx.diffeqsolve(flow.terms(), dfx.Dopri5(), 0.0, 2.0, None, y0, saveat=dfx.SaveAt(ts=ts),
                          stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-12))
    np.testing.assert_allclose(out.ys, exact, atol=1e-8)


def test_second_solve_compiles_nothing():
    """The solve is one cached kernel: a second call with new values (start, key, lr) but the
    same shapes and settings reuses it."""
    quad = so.landscapes.quadratic(_H)
    kw = dict(n_paths=3, t1=0.5, dt0=0.05, ts=jnp.linspace(0.0, 0.5, 3))
    so.solve_diffrax(so.SGDSDE(quad, 0.1, 1, so.ConstantNoise(_D)), jnp.ones(2), key=jr.key(0), **kw)
    dyn, y0, key = so.SGDSDE(quad, 0.2, 1, so.ConstantNoise(_D)), jnp.array([-1.0, 0.5]), jr.key(1)
    with count_compiles() as c:
        ens = so.solve_diffrax(dyn, y0, key=key, **kw)
        ens.ys.block_until_ready()
    assert c.n == 0, c.names


def test_sde_terms_work_with_diffrax_directly():
    """dyn.terms(brownian) is a MultiTerm(ODETerm, ControlTerm) that any diffrax SDE solver
    accepts; with zero noise variance Heun's solution is the gradient-flow one."""
    quad = so.landscapes.quadratic(_H)
    y0 = jnp.array([1.0, -1.0])
    bm = dfx.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(2,), key=jr.key(0))
    terms = so.SGDSDE(quad, 0.1, 1, so.IsotropicNoise(0.0)).terms(bm)
    assert isinstance(terms, dfx.MultiTerm)
    sol = dfx.diffeqsolve(terms, dfx.Heun(), 0.0, 1.0, 0.005, y0)
    np.testing.assert_allclose(sol.ys[-1], scipy.linalg.expm(-np.asarray(_H)) @ np.asarray(y0), atol=1e-4)


def test_diffrax_bad_inputs():
    quad = so.landscapes.quadratic(_H)
    sde = so.SGDSDE(quad, 0.1, 1, so.IsotropicNoise(1.0))
    ok = dict(key=jr.key(0), n_paths=2, t1=1.0, dt0=0.1)
    with pytest.raises(ValueError, match="dt0"):
        so.solve_diffrax(sde, jnp.ones(2), **{**ok, "dt0": None})
    with pytest.raises(ValueError, match="t1"):
        so.solve_diffrax(sde, jnp.ones(2), **{**ok, "t1": 0.0})
    with pytest.raises(ValueError, match="n_paths"):
        so.solve_diffrax(sde, jnp.ones(2), **{**ok, "n_paths": 0})
    with pytest.raises(ValueError, match="y0"):
        so.solve_diffrax(sde, jnp.array([1.0, jnp.nan]), **ok)
    with pytest.raises(ValueError, match="y0"):
        so.solve_diffrax(sde, jnp.ones(3), **ok)
