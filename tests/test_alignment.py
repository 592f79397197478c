"""Noise–curvature alignment diagnostics against dense H and D (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from curvature_helpers import count_compiles, dense_hessian, dense_noise

import sde_opt as so


@pytest.fixture(scope="module")
def mlp():
    prob = so.problems.mlp_digits(key=jr.key(5), hidden=(2,), n_examples=40)
    p = prob.theta0 + 0.3 * jr.normal(jr.key(6), prob.theta0.shape)
    h = np.asarray(dense_hessian(prob, p))
    d = np.asarray(dense_noise(prob, p))
    g = np.asarray(eqx.filter_jit(lambda pr, p: pr.grad(p))(prob, p))
    return prob, p, h, d, g


def test_exact_alignment_matches_dense(mlp, getkey):
    prob, p, h, d, g = mlp
    k = 3
    al = so.curvature.alignment(prob, p, key=getkey(), k=k, n_probes=None)
    assert float(al.trace_h) == pytest.approx(np.trace(h), rel=1e-10)
    assert float(al.trace_d) == pytest.approx(np.trace(d), rel=1e-10)
    assert float(al.trace_hd) == pytest.approx(np.trace(h @ d), rel=1e-10)
    ratio = np.trace(h @ d) / (np.trace(h) * np.trace(d))
    assert float(al.ratio) == pytest.approx(ratio, rel=1e-10)
    assert float(al.ratio_vs_isotropic) == pytest.approx(h.shape[0] * ratio, rel=1e-10)
    lam_h, v_h = np.linalg.eigh(h)
    lam_d, v_d = np.linalg.eigh(d)
    v_h, v_d = v_h[:, ::-1][:, :k], v_d[:, ::-1][:, :k]
    np.testing.assert_allclose(al.hessian_values, lam_h[::-1][:k], rtol=1e-8)
    np.testing.assert_allclose(al.noise_values, lam_d[::-1][:k], rtol=1e-8)
    assert float(al.overlap) == pytest.approx(np.sum((v_h.T @ v_d) ** 2) / k, abs=1e-7)
    q = np.einsum("ik,ij,jk->k", v_h, d, v_h)
    np.testing.assert_allclose(al.noise_along_hessian, q, rtol=1e-7)
    assert float(al.slope) == pytest.approx(np.sum(lam_h[::-1][:k] * q) / np.sum(lam_h[::-1][:k] ** 2), rel=1e-7)
    assert float(al.noise_scale) == pytest.approx(np.trace(d) / (g @ g), rel=1e-10)
    assert float(so.curvature.gradient_noise_scale(prob, p)) == pytest.approx(np.trace(d) / (g @ g), rel=1e-10)
    assert float(so.curvature.noise_to_signal(prob, p, 8)) == pytest.approx(np.trace(d) / 8 / (g @ g), rel=1e-10)
    n = prob.n_examples
    nsr = (n - 8) / ((n - 1) * 8) * np.trace(d) / (g @ g)
    assert float(so.curvature.noise_to_signal(prob, p, 8, replacement=False)) == pytest.approx(nsr, rel=1e-10)
    assert float(al.noise_to_signal(8, n, replacement=False)) == pytest.approx(nsr, rel=1e-10)
    assert float(so.curvature.trace_hd(prob, p, n_probes=None).value) == pytest.approx(np.trace(h @ d), rel=1e-10)
    slope, lam, q2 = so.curvature.noise_hessian_slope(prob, p, key=getkey(), k=k)
    assert float(slope) == pytest.approx(float(al.slope), rel=1e-7)


def test_stochastic_alignment_within_three_standard_errors(mlp):
    prob, p, h, d, _ = mlp
    keys = jr.split(jr.key(11), 12)
    al = jax.vmap(lambda k: so.curvature.alignment(prob, p, key=k, k=2, n_probes=60))(keys)
    for est, se, exact in [
        (al.trace_h, al.trace_h_stderr, np.trace(h)),
        (al.trace_hd, al.trace_hd_stderr, np.trace(h @ d)),
        (al.ratio, al.ratio_stderr, np.trace(h @ d) / (np.trace(h) * np.trace(d))),
    ]:
        z = (np.asarray(est) - exact) / np.asarray(se)
        assert np.sum(np.abs(z) >= 3) <= 1 and np.all(np.abs(z) < 4), z
    hd = jax.vmap(lambda k: so.curvature.trace_hd(prob, p, key=k, n_probes=60))(keys)
    z = (np.asarray(hd.value) - np.trace(h @ d)) / np.asarray(hd.stderr)
    assert np.sum(np.abs(z) >= 3) <= 1 and np.all(np.abs(z) < 4), z


def test_least_squares_at_its_minimum_has_noise_shaped_like_the_hessian():
    """Gaussian NLL with unit variance: at the minimum D ≈ σ²H = H (Xie et al. 2021 slope 1),
    up to O(1/√N) sampling error of the residuals."""
    prob = so.problems.linear_regression(key=jr.key(3), n_examples=4000, dim=3, noise_std=1.0)
    al = so.curvature.alignment(prob, prob.info["minima"][0], key=jr.key(0), k=2, n_probes=None)
    assert float(al.slope) == pytest.approx(1.0, abs=0.1)
    assert float(al.ratio_vs_isotropic) > 1.0


def test_eigenspace_overlap():
    e = jnp.eye(6)
    assert float(so.curvature.eigenspace_overlap(e[:3], e[:3])) == pytest.approx(1.0)
    assert float(so.curvature.eigenspace_overlap(e[:3], e[3:])) == pytest.approx(0.0)
    assert float(so.curvature.eigenspace_overlap(e[:2], e[:4])) == pytest.approx(1.0)  # one span inside the other


def test_alignment_compiles_once(mlp):
    prob, p, *_ = mlp
    so.curvature.alignment(prob, p, key=jr.key(0), k=3, n_probes=None)  # compiled already by the exact test
    p2, key2 = p + 0.01, jr.key(1)
    with count_compiles() as c:
        so.curvature.alignment(prob, p2, key=key2, k=3, n_probes=None)
    assert c.n == 0, c.names


def test_alignment_bad_input(mlp):
    prob, p, *_ = mlp
    with pytest.raises(ValueError, match="at most N-1 nonzero eigenvalues"):
        so.curvature.alignment(prob, p, key=jr.key(0), k=40)
    with pytest.raises(ValueError, match="needs a finite-sum problem"):
        so.curvature.alignment(so.landscapes.quadratic(jnp.eye(2)), jnp.ones(2), key=jr.key(0))
    with pytest.raises(ValueError, match="n_probes must be >= 2"):
        so.curvature.alignment(prob, p, key=jr.key(0), n_probes=1)
    with pytest.raises(ValueError, match="does not exist"):
        so.curvature.alignment(prob, p, key=jr.key(0), group="3")
    with pytest.raises(ValueError, match="needs key="):
        so.curvature.trace_hd(prob, p, n_probes=8)
