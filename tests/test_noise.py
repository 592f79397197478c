"""Noise models against ground truth: the mini-batch covariance against the exact variance
of real batch gradients (every batch enumerated) and against real SGD steps on the engine;
the other models against their definitions (factor G Gᵀ = D, PSD parts, null spaces)."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import cov_and_se

import sde_opt as so


def _logistic(key, n=6, d=3):
    """Non-quadratic finite sum, so D(θ) depends on θ in a non-trivial way."""
    kx, ky = jr.split(key)
    data = {"x": jr.normal(kx, (n, d)), "y": (jr.uniform(ky, (n,)) < 0.5).astype(jnp.float64)}

    def loss(th, ex):
        z = ex["x"] @ th
        return jax.nn.softplus(z) - ex["y"] * z + 0.05 * th @ th

    return so.Problem(loss, data, params=jnp.zeros(d))


@pytest.fixture(scope="module")
def small():
    prob = _logistic(jr.key(0))
    theta = jnp.array([0.3, -0.7, 1.1])
    return prob, theta


@eqx.filter_jit
def _batch_grads(prob, theta, idx):
    """problem.batch_grad for every row of idx (n_batches, B): the batch gradients SGD uses."""
    return jax.vmap(prob.batch_grad, (None, 0))(theta, idx)


def _population_cov(g):
    c = g - g.mean(0)
    return c.T @ c / g.shape[0]


# ------------------------------------------------------------ MinibatchNoise, exactly
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_minibatch_covariance_equals_enumerated_batches_with_replacement(small, batch_size):
    """All N^B equally likely ordered batches: Var(g_B) · B = D exactly (to rounding)."""
    prob, theta = small
    n = prob.n_examples
    idx = jnp.array(list(itertools.product(range(n), repeat=batch_size)))
    g = _batch_grads(prob, theta, idx)
    np.testing.assert_allclose(g.mean(0), prob.grad(theta), rtol=1e-12, atol=1e-14)  # unbiased
    d = so.MinibatchNoise().covariance(prob, theta)
    np.testing.assert_allclose(_population_cov(g) * batch_size, d, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(
        _population_cov(g), so.curvature.gradient_covariance(so.MinibatchNoise(), prob, theta, batch_size), rtol=1e-11,
        atol=1e-14,
    )


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 6])
def test_minibatch_covariance_equals_enumerated_subsets_without_replacement(small, batch_size):
    """All C(N, B) equally likely subsets: Var(g_B) = (N − B)/(N − 1) · D / B exactly."""
    prob, theta = small
    n = prob.n_examples
    idx = jnp.array(list(itertools.combinations(range(n), batch_size)))
    g = _batch_grads(prob, theta, idx)
    want = so.curvature.gradient_covariance(so.MinibatchNoise(), prob, theta, batch_size, replacement=False)
    np.testing.assert_allclose(_population_cov(g), want, rtol=1e-11, atol=1e-14)
    d = so.MinibatchNoise().covariance(prob, theta)
    np.testing.assert_allclose(want, (n - batch_size) / (n - 1) / batch_size * d, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("replacement", [True, False])
def test_minibatch_covariance_matches_real_sgd_steps(small, replacement):
    """One step of real SGD on the engine from θ, 40,000 paths: the batch gradient
    g_B = (θ − θ₁)/lr, drawn by SGD's own index sampler. Its sample covariance × B is within
    5 SE of D (SE per entry from the sample fourth moments, see conftest.cov_and_se), and
    the mean within 5 SE of ∇L."""
    prob, theta = small
    n, b, lr = prob.n_examples, 3, 0.1
    ens = so.simulate(so.SGD(prob, lr, b, replacement=replacement), theta, key=jr.key(1), n_paths=40_000, n_steps=1)
    g = (theta - ens.ys[:, 1]) / lr
    cov, se = cov_and_se(g)
    want = so.curvature.gradient_covariance(so.MinibatchNoise(), prob, theta, b, replacement=replacement)
    assert np.all(np.abs(cov - want) <= 5 * se), (cov, want, se)
    mean_se = jnp.sqrt(jnp.diag(cov) / g.shape[0])
    assert np.all(np.abs(g.mean(0) - prob.grad(theta)) <= 5 * mean_se)
    # the test has power: the other sampling scheme's covariance differs by (N−B)/(N−1) = 0.6,
    # which is far outside the tolerance on the diagonal
    other = so.curvature.gradient_covariance(so.MinibatchNoise(), prob, theta, b, replacement=not replacement)
    assert np.all(np.abs(jnp.diag(cov) - jnp.diag(other)) > 10 * jnp.diag(se))


def test_minibatch_factor_is_centred_gradients(small):
    prob, theta = small
    noise = so.MinibatchNoise()
    g = prob.per_example_grads(theta)
    fac = noise.factor(prob, theta)
    assert fac.shape == (prob.dim, prob.n_examples)  # d × N, never a square root of D
    assert noise.n_normals(prob, prob.dim) == prob.n_examples
    np.testing.assert_allclose(fac @ fac.T, noise.covariance(prob, theta), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fac @ fac.T, _population_cov(g), rtol=1e-12, atol=1e-15)
    z = jr.normal(jr.key(3), (prob.n_examples,))
    np.testing.assert_allclose(noise.apply_factor(prob, theta, z), fac @ z, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fac.sum(axis=1), 0.0, atol=1e-14)  # centred: the columns sum to 0


def test_empirical_fisher_is_d_plus_grad_outer(small):
    prob, theta = small
    fisher = so.EmpiricalFisherNoise()
    grad = prob.grad(theta)
    want = so.MinibatchNoise().covariance(prob, theta) + jnp.outer(grad, grad)
    np.testing.assert_allclose(fisher.covariance(prob, theta), want, rtol=1e-12, atol=1e-15)
    fac = fisher.factor(prob, theta)
    np.testing.assert_allclose(fac @ fac.T, want, rtol=1e-12, atol=1e-15)
    z = jr.normal(jr.key(4), (fisher.n_normals(prob, prob.dim),))
    np.testing.assert_allclose(fisher.apply_factor(prob, theta, z), fac @ z, rtol=1e-12, atol=1e-15)


def test_empirical_fisher_equals_minibatch_noise_at_the_minimum():
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
    theta_star = prob.info["minima"][0]
    np.testing.assert_allclose(
        so.EmpiricalFisherNoise().covariance(prob, theta_star), so.MinibatchNoise().covariance(prob, theta_star),
        rtol=1e-10, atol=1e-13,
    )


# ------------------------------------------------------------ the other models
def test_hessian_noise_is_psd_part_of_dense_hessian():
    rot = jnp.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    h = rot @ jnp.diag(jnp.array([3.0, -2.0])) @ rot.T  # indefinite
    prob = so.landscapes.quadratic(h)
    theta = jnp.array([0.2, 0.5])
    noise = so.HessianNoise(scale=0.5)
    want = 0.5 * rot @ jnp.diag(jnp.array([3.0, 0.0])) @ rot.T
    np.testing.assert_allclose(noise.covariance(prob, theta), want, atol=1e-13)
    fac = noise.factor(prob, theta)
    np.testing.assert_allclose(fac @ fac.T, want, atol=1e-13)
    z = jr.normal(jr.key(0), (noise.n_normals(prob, 2),))
    np.testing.assert_allclose(noise.apply_factor(prob, theta, z), fac @ z, atol=1e-13)


def test_hessian_noise_on_nonlinear_landscape_matches_clipped_eigh():
    prob = so.landscapes.strict_saddle()
    dense = jax.hessian(prob.loss)
    for p in (jnp.zeros(2), jnp.array([0.3, 0.4]), jnp.array([-1.0, 1.2])):
        lam, vec = np.linalg.eigh(np.asarray(dense(p)))
        want = vec @ np.diag(np.clip(lam, 0, None)) @ vec.T
        np.testing.assert_allclose(so.HessianNoise().covariance(prob, p), want, atol=1e-13)


def test_constant_noise_factor_and_null_space():
    u = jnp.array([1.0, 2.0, -1.0]) / jnp.sqrt(6.0)
    v = jnp.array([1.0, 0.0, 1.0]) / jnp.sqrt(2.0)
    cov = 2.0 * jnp.outer(u, u) + 0.5 * jnp.outer(v, v)  # rank 2 in 3-D
    null = jnp.cross(u, v)
    noise = so.ConstantNoise(cov)
    prob = so.landscapes.quadratic(jnp.eye(3))
    theta = jnp.zeros(3)
    fac = noise.factor(prob, theta)
    assert fac.shape == (3, 2) and noise.n_normals(prob, 3) == 2  # the null space costs no normals
    np.testing.assert_allclose(fac @ fac.T, cov, atol=1e-14)
    np.testing.assert_allclose(null @ fac, 0.0, atol=1e-14)
    np.testing.assert_allclose(noise.covariance(prob, theta), cov, atol=1e-15)
    z = jr.normal(jr.key(0), (2,))
    np.testing.assert_allclose(noise.apply_factor(prob, theta, z), fac @ z, atol=1e-14)


def test_constant_noise_full_rank():
    cov = jnp.array([[2.0, 0.3], [0.3, 0.5]])
    noise = so.ConstantNoise(cov)
    prob = so.landscapes.quadratic(jnp.eye(2))
    fac = noise.factor(prob, jnp.zeros(2))
    assert fac.shape == (2, 2)
    np.testing.assert_allclose(fac @ fac.T, cov, atol=1e-14)


def test_isotropic_and_diagonal_noise():
    prob = so.landscapes.quadratic(jnp.eye(3))
    theta = jnp.ones(3)
    iso = so.IsotropicNoise(0.3)
    np.testing.assert_allclose(iso.covariance(prob, theta), 0.3 * np.eye(3), atol=1e-15)
    fac = iso.factor(prob, theta)
    np.testing.assert_allclose(fac @ fac.T, 0.3 * np.eye(3), atol=1e-15)
    z = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(iso.apply_factor(prob, theta, z), np.sqrt(0.3) * z, atol=1e-15)
    assert iso.n_normals(prob, 3) == 3
    diag = so.DiagonalNoise(jnp.array([0.1, 0.0, 2.0]))
    np.testing.assert_allclose(diag.covariance(prob, theta), np.diag([0.1, 0.0, 2.0]), atol=1e-15)
    fac = diag.factor(prob, theta)
    np.testing.assert_allclose(fac @ fac.T, np.diag([0.1, 0.0, 2.0]), atol=1e-15)
    np.testing.assert_allclose(diag.apply_factor(prob, theta, z), fac @ z, atol=1e-15)


def test_noise_models_are_jittable(small):
    prob, theta = small
    for noise in (so.MinibatchNoise(), so.EmpiricalFisherNoise(), so.HessianNoise(2.0)):
        eager = noise.covariance(prob, theta)
        jitted = eqx.filter_jit(lambda nz, pr, th: nz.covariance(pr, th))(noise, prob, theta)
        np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------ bad inputs
def test_noise_bad_inputs():
    with pytest.raises(ValueError, match="covariance"):
        so.ConstantNoise(jnp.array([[1.0, 0.0], [0.0, -0.5]]))  # not PSD
    with pytest.raises(ValueError, match="covariance"):
        so.ConstantNoise(jnp.array([[1.0, 0.4], [0.0, 1.0]]))  # not symmetric
    with pytest.raises(ValueError, match="covariance"):
        so.ConstantNoise(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="covariance"):
        so.ConstantNoise(jnp.ones(3))
    with pytest.raises(ValueError, match="covariance"):
        so.ConstantNoise(jnp.array([[1.0, jnp.nan], [jnp.nan, 1.0]]))
    with pytest.raises(ValueError, match="variance"):
        so.IsotropicNoise(-1.0)
    with pytest.raises(ValueError, match="variance"):
        so.IsotropicNoise(float("nan"))
    with pytest.raises(ValueError, match="variance"):
        so.IsotropicNoise(jnp.ones(2))
    with pytest.raises(ValueError, match="scale"):
        so.HessianNoise(scale=-0.1)
    with pytest.raises(ValueError, match="variances"):
        so.DiagonalNoise(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="variances"):
        so.DiagonalNoise(jnp.eye(2))


def test_noise_problem_mismatch_raises_at_simulate():
    quad = so.landscapes.quadratic(jnp.eye(2))
    key = jr.key(0)
    with pytest.raises(ValueError, match="covariance"):
        so.simulate(so.SGDSDE(quad, 0.1, 1, so.ConstantNoise(jnp.eye(3))), jnp.ones(2), key=key, n_paths=2,
                    n_steps=2)
    with pytest.raises(ValueError, match="variances"):
        so.simulate(so.NoisyGD(quad, 0.1, 1, so.DiagonalNoise(jnp.ones(3))), jnp.ones(2), key=key, n_paths=2,
                    n_steps=2)
    with pytest.raises(ValueError, match="data"):  # MinibatchNoise needs a finite sum
        so.simulate(so.SGDSDE(quad, 0.1, 1, so.MinibatchNoise()), jnp.ones(2), key=key, n_paths=2, n_steps=2)
    with pytest.raises(ValueError, match="noise"):
        so.SGDSDE(quad, 0.1, 1, noise=jnp.eye(2))
    with pytest.raises(ValueError, match="noise"):
        so.NoisyGD(quad, 0.1, 1, noise="hessian")


def test_noise_problem_mismatch_raises_with_per_path_start():
    quad = so.landscapes.quadratic(jnp.eye(2))
    with pytest.raises(ValueError, match="covariance"):
        so.simulate(so.SGDSDE(quad, 0.1, 1, so.ConstantNoise(jnp.eye(3))), jnp.ones((2, 2)), key=jr.key(0),
                    n_paths=2, n_steps=2)


# ------------------------------------------------------------------- network-scale draws
def _tiny_mlp(key, chunk_size=None, n=13):
    """An Equinox MLP (d = 19) on 13 examples: small enough for dense factors."""
    model = eqx.nn.MLP(4, 1, 3, 1, activation=jax.nn.tanh, key=key)
    kx, ky = jr.split(jr.fold_in(key, 1))
    data = {"x": jr.normal(kx, (n, 4)), "y": jr.normal(ky, (n,))}
    loss = lambda m, ex: 0.5 * (m(ex["x"])[0] - ex["y"]) ** 2  # noqa: E731
    return so.Problem(loss, data, params=model, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_vjp_draw_equals_dense_factor_path(chunk_size):
    """Gcᵀz/√N by one VJP (no per-example matrix) equals the dense factor times z, for the
    same z, to 1e-10; the empirical Fisher's Jᵀz/√N too."""
    prob = _tiny_mlp(jr.key(0), chunk_size)
    dense_prob = _tiny_mlp(jr.key(0))
    theta = prob.theta0 + 0.2 * jr.normal(jr.key(1), prob.theta0.shape)
    for i in range(5):
        z = jr.normal(jr.key(10 + i), (prob.n_examples,))
        for noise in (so.MinibatchNoise(), so.EmpiricalFisherNoise()):
            want = noise.factor(dense_prob, theta) @ z
            np.testing.assert_allclose(noise.apply_factor(prob, theta, z), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [lambda p, lr, b: so.SGDSDE(p, lr, b, so.MinibatchNoise()),
                                  lambda p, lr, b: so.NoisyGD(p, lr, b, so.MinibatchNoise())],
                         ids=["SGDSDE", "NoisyGD"])
def test_vjp_draw_covariance_is_d_over_b(make):
    """One step from θ of 20,000 paths: the increment Δ = θ₁ − θ + lr∇L has covariance
    lr²·D/B (SGDSDE with dt = lr, and NoisyGD), every entry within 5 SE, with the noise drawn
    by the VJP in chunks."""
    prob = _tiny_mlp(jr.key(2), chunk_size=5)
    theta = prob.theta0 + 0.2 * jr.normal(jr.key(3), prob.theta0.shape)
    lr, b = 0.1, 4
    ens = so.simulate(make(prob, lr, b), theta, key=jr.key(4), n_paths=20_000, n_steps=1)
    delta = (ens.ys[:, 1] - theta + lr * prob.grad(theta)) / lr
    cov, se = cov_and_se(delta)
    want = so.MinibatchNoise().covariance(prob, theta) / b
    assert np.all(np.abs(cov - want) <= 5 * se), np.max(np.abs(cov - want) / se)


def test_lanczos_sqrt_hessian_draw_converges_to_dense():
    """HessianNoise(method="lanczos"): √H₊z by n_steps Lanczos steps on HVPs; away from a
    minimum (H indefinite) the error to the dense symmetric root falls with n_steps and is
    at rounding level at n_steps = d. (The dense factor V√Λ₊ is another root of H₊: same
    distribution, different draw.)"""
    prob = _tiny_mlp(jr.key(5), chunk_size=5)
    theta = prob.theta0 + 0.5 * jr.normal(jr.key(6), prob.theta0.shape)
    assert np.min(np.linalg.eigvalsh(prob.hessian(theta))) < 0  # the clipping matters
    d = prob.dim
    z = jr.normal(jr.key(7), (d,))
    lam, vec = np.linalg.eigh(np.asarray(so.HessianNoise(2.0).covariance(prob, theta)))
    want = vec @ (np.sqrt(np.clip(lam, 0, None)) * (vec.T @ np.asarray(z)))  # the symmetric root √(2H₊) z
    errs = [float(jnp.linalg.norm(so.HessianNoise(2.0, method="lanczos", n_steps=k).apply_factor(prob, theta, z) - want))
            for k in (2, 6, 12, d)]
    assert errs[0] > errs[1] > errs[2] > errs[3], errs
    assert errs[-1] < 1e-8 * float(jnp.linalg.norm(want)), errs
    with pytest.raises(ValueError, match="method must be"):
        so.HessianNoise(method="krylov")
    with pytest.raises(ValueError, match="n_steps"):
        so.HessianNoise(method="lanczos", n_steps=0)


def test_lanczos_hessian_draw_covariance_through_sgdsde():
    """SGDSDE with HessianNoise(method="lanczos", n_steps=d): one step of 10,000 paths has
    increment covariance lr²·scale·H₊/B, every entry within 5 SE."""
    prob = _tiny_mlp(jr.key(8), chunk_size=5)
    theta = prob.theta0 + 0.5 * jr.normal(jr.key(9), prob.theta0.shape)
    lr, b = 0.1, 2
    noise = so.HessianNoise(2.0, method="lanczos", n_steps=prob.dim)
    ens = so.simulate(so.SGDSDE(prob, lr, b, noise), theta, key=jr.key(10), n_paths=10_000, n_steps=1)
    delta = (ens.ys[:, 1] - theta + lr * prob.grad(theta)) / lr
    cov, se = cov_and_se(delta)
    want = so.HessianNoise(2.0).covariance(prob, theta) / b
    assert np.all(np.abs(cov - want) <= 5 * se), np.max(np.abs(cov - want) / se)
