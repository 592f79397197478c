"""ou_stationary_covariance against the Lyapunov equations it claims to solve (residuals),
scipy's solvers, and the closed forms for D = H."""

import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

import sde_opt as so


def _spd(key, d, lo, hi):
    q, _ = np.linalg.qr(np.asarray(jr.normal(key, (d, d))))
    return q @ np.diag(np.linspace(lo, hi, d)) @ q.T


@pytest.fixture(scope="module")
def hd():
    h = _spd(jr.key(0), 4, 0.3, 3.0)
    g = np.asarray(jr.normal(jr.key(1), (4, 3)))
    return h, g @ g.T  # D is PSD of rank 3


@pytest.mark.parametrize("batch_size", [1, 8])
def test_continuous_solution_satisfies_its_lyapunov_equation(hd, batch_size):
    h, d = hd
    lr = 0.05
    sigma = np.asarray(so.ou_stationary_covariance(h, d, lr, batch_size))
    rhs = lr / batch_size * d
    residual = h @ sigma + sigma @ h - rhs
    assert np.abs(residual).max() < 1e-13 * np.abs(rhs).max()
    np.testing.assert_allclose(sigma, sigma.T, atol=0)
    assert np.linalg.eigvalsh(sigma).min() > 0  # H ≻ 0 and D ≠ 0 on every eigendirection here
    # scipy solves AX + XAᴴ = Q
    np.testing.assert_allclose(sigma, scipy.linalg.solve_continuous_lyapunov(h, rhs), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("lr", [0.05, 0.5])
def test_discrete_solution_satisfies_its_lyapunov_equation(hd, lr):
    h, d = hd
    b = 4
    sigma = np.asarray(so.ou_stationary_covariance(h, d, lr, b, discrete=True))
    a = np.eye(4) - lr * h
    rhs = lr**2 / b * d
    residual = sigma - a @ sigma @ a.T - rhs
    assert np.abs(residual).max() < 1e-12 * np.abs(sigma).max()
    # scipy solves A X Aᴴ − X + Q = 0
    np.testing.assert_allclose(sigma, scipy.linalg.solve_discrete_lyapunov(a, rhs), rtol=1e-9, atol=1e-15)


def test_d_equal_h_gives_lr_over_2b_identity(hd):
    h, _ = hd
    lr, b = 0.1, 4
    np.testing.assert_allclose(so.ou_stationary_covariance(h, h, lr, b), lr / (2 * b) * np.eye(4), atol=1e-14)
    # the discrete law with D = H: Σ = V diag(lr / (B (2 − lr λᵢ))) Vᵀ
    lam, v = np.linalg.eigh(h)
    want = v @ np.diag(lr / (b * (2 - lr * lam))) @ v.T
    np.testing.assert_allclose(so.ou_stationary_covariance(h, h, lr, b, discrete=True), want, rtol=1e-12,
                               atol=1e-15)


def test_discrete_tends_to_continuous_as_lr_shrinks(hd):
    """Relative gap between the two solutions is O(lr): halving lr halves it (within 10%)."""
    h, d = hd
    gaps = []
    for lr in (0.02, 0.01, 0.005):
        c = np.asarray(so.ou_stationary_covariance(h, d, lr, 1))
        s = np.asarray(so.ou_stationary_covariance(h, d, lr, 1, discrete=True))
        gaps.append(np.linalg.norm(s - c) / np.linalg.norm(c))
    np.testing.assert_allclose(gaps[0] / gaps[1], 2.0, rtol=0.1)
    np.testing.assert_allclose(gaps[1] / gaps[2], 2.0, rtol=0.1)


def test_theory_bad_inputs(hd):
    h, d = hd
    with pytest.raises(ValueError, match="lr"):  # lr·λmax = 0.7·3 = 2.1 > 2: discrete SGD is unstable
        so.ou_stationary_covariance(h, d, 0.7, 1, discrete=True)
    with pytest.raises(ValueError, match="lr"):
        so.ou_stationary_covariance(h, d, 0.667, 1, discrete=True)  # just past the edge lr·λmax = 2
    so.ou_stationary_covariance(h, d, 0.7, 1)  # the continuous law exists for any lr
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="lr"):
            so.ou_stationary_covariance(h, d, bad, 1)
    with pytest.raises(ValueError, match="batch_size"):
        so.ou_stationary_covariance(h, d, 0.1, 0)
    with pytest.raises(ValueError, match="hessian"):
        so.ou_stationary_covariance(np.diag([1.0, -1.0, 1.0, 1.0]), d, 0.1, 1)  # not positive definite
    with pytest.raises(ValueError, match="hessian"):
        so.ou_stationary_covariance(np.diag([1.0, 0.0, 1.0, 1.0]), d, 0.1, 1)  # singular
    with pytest.raises(ValueError, match="hessian"):
        so.ou_stationary_covariance(h + np.triu(np.ones((4, 4)), 1), d, 0.1, 1)  # not symmetric
    with pytest.raises(ValueError, match="hessian"):
        so.ou_stationary_covariance(np.ones((4, 3)), d, 0.1, 1)
    with pytest.raises(ValueError, match="noise_cov"):
        so.ou_stationary_covariance(h, np.eye(3), 0.1, 1)  # wrong shape
    with pytest.raises(ValueError, match="noise_cov"):
        so.ou_stationary_covariance(h, -np.eye(4), 0.1, 1)  # not PSD
    with pytest.raises(ValueError, match="noise_cov"):
        so.ou_stationary_covariance(h, np.full((4, 4), np.nan), 0.1, 1)
