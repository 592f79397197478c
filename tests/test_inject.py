"""Shaped noise injection (``so.inject_noise``): the injected covariance equals its target
``τ·D(θ)`` (dense reference, standard errors), equal-trace noises have equal trace, the term
enters an ``optax.chain`` with momentum where documented, temperature 0 leaves the
optimizer bit for bit unchanged, and on the engine every path draws its own noise (the
stationary variance of GD plus injected noise on a quadratic against its closed form)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sde_opt as so
from conftest import mean_and_se


@pytest.fixture(scope="module")
def regression():
    """Least squares with 30 examples in d = 3 at a point that is not the minimum."""
    kx, ky = jr.split(jr.key(2))
    x = jr.normal(kx, (30, 3)) * jnp.array([1.0, 0.6, 1.5])
    y = x @ jnp.array([0.5, -1.0, 0.3]) + 0.4 * jr.normal(ky, (30,))
    prob = so.Problem(lambda th, ex: 0.5 * (ex["x"] @ th - ex["y"]) ** 2, {"x": x, "y": y}, params=jnp.zeros(3))
    return prob, jnp.array([0.2, -0.4, 0.1])


def _draws(tx, theta, n):
    """``n`` injected draws at ``theta`` (zero incoming updates), one per update count."""
    state = tx.init(theta)

    def one(k):
        st = state._replace(count=jnp.asarray(k, jnp.int32))
        return tx.update(jnp.zeros_like(theta), st, theta)[0]

    return jax.lax.map(one, jnp.arange(n), batch_size=512)


NOISES = {
    "isotropic": lambda: so.IsotropicNoise(0.7),
    "diagonal": lambda: so.DiagonalNoise(jnp.array([0.5, 2.0, 1.0])),
    "constant": lambda: so.ConstantNoise(jnp.array([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]])),
    "hessian": lambda: so.HessianNoise(),
    "minibatch": lambda: so.MinibatchNoise(),
    "empirical_fisher": lambda: so.EmpiricalFisherNoise(),
}


@pytest.mark.parametrize("name", sorted(NOISES))
def test_injected_covariance_is_temperature_times_the_noise_covariance(regression, name):
    prob, theta = regression
    noise, tau, n = NOISES[name](), 0.3, 40_000
    xi = _draws(so.inject_noise(prob, noise, temperature=tau, seed=11), theta, n)
    target = tau * noise.covariance(prob, theta)
    emp = jnp.cov(xi.T)
    # standard error of a sample covariance entry of a Gaussian: √((Σᵢᵢ Σⱼⱼ + Σᵢⱼ²)/n)
    se = jnp.sqrt((jnp.outer(jnp.diag(target), jnp.diag(target)) + target**2) / n)
    assert float(jnp.max(jnp.abs(emp - target) / se)) < 4.5
    m, s = mean_and_se(xi)
    assert float(jnp.max(jnp.abs(m) / s)) < 4.5


def test_subsampled_minibatch_noise_has_the_sample_covariance_law(regression):
    """With ``subsample=s`` the mean covariance over sub-samples is ``D·(s−1)N/(s(N−1))``."""
    prob, theta = regression
    s, n_draws, N = 10, 40_000, prob.n_examples
    xi = _draws(so.inject_noise(prob, so.MinibatchNoise(), temperature=1.0, seed=3, subsample=s), theta, n_draws)
    target = so.MinibatchNoise().covariance(prob, theta) * (s - 1) * N / (s * (N - 1))
    emp = jnp.cov(xi.T)
    # the draws are a Gaussian scale mixture, not Gaussian: use the spread of ξᵢξⱼ itself
    prods = xi[:, :, None] * xi[:, None, :]
    se = jnp.std(prods, axis=0, ddof=1) / jnp.sqrt(n_draws)
    assert float(jnp.max(jnp.abs(emp - target) / se)) < 4.5


def test_equal_trace_noises_have_equal_trace(regression):
    prob, theta = regression
    scaled = so.optimizers.equal_trace(prob, theta, [NOISES[k]() for k in sorted(NOISES)], trace=2.5)
    for n in scaled:
        np.testing.assert_allclose(jnp.trace(n.covariance(prob, theta)), 2.5, rtol=1e-12)
    with pytest.raises(ValueError, match="trace 0"):
        so.optimizers.equal_trace(prob, theta, [so.IsotropicNoise(0.0)])


def test_inside_a_chain_with_momentum_the_noise_is_extra_gradient(regression):
    """``chain(inject_noise, sgd(lr, momentum))``: the momentum buffer accumulates ``g + ξ``;
    ``chain(sgd(lr, momentum), inject_noise)``: ``ξ`` is added to the parameter step."""
    prob, theta0 = regression
    lr, beta, tau = 0.05, 0.9, 0.2
    noise = so.HessianNoise()
    inj = so.inject_noise(prob, noise, temperature=tau, seed=5)
    before = optax.chain(inj, optax.sgd(lr, momentum=beta))
    after = optax.chain(optax.sgd(lr, momentum=beta), inj)

    def run(tx, n=6):
        theta, state, out = theta0, tx.init(theta0), []
        for _ in range(n):
            upd, state = tx.update(prob.grad(theta), state, theta)
            theta = theta + upd
            out.append(theta)
        return jnp.stack(out)

    def xi(k, theta):  # the k-th draw at theta, as the transform makes it
        st = inj.init(theta)._replace(count=jnp.asarray(k, jnp.int32))
        return inj.update(jnp.zeros_like(theta), st, theta)[0]

    th, buf, want_b, th2, buf2, want_a = theta0, jnp.zeros(3), [], theta0, jnp.zeros(3), []
    for k in range(6):
        buf = beta * buf + prob.grad(th) + xi(k, th)
        th = th - lr * buf
        want_b.append(th)
        buf2 = beta * buf2 + prob.grad(th2)
        th2 = th2 - lr * buf2 + xi(k, th2)
        want_a.append(th2)
    np.testing.assert_allclose(run(before), jnp.stack(want_b), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run(after), jnp.stack(want_a), rtol=1e-12, atol=1e-14)


def test_temperature_zero_is_the_optimizer_bit_for_bit(regression):
    prob, theta0 = regression
    plain = optax.adam(0.01)
    with_zero = optax.chain(so.inject_noise(prob, so.MinibatchNoise(), temperature=0.0, seed=1), optax.adam(0.01))
    outs = []
    for tx in (plain, with_zero):
        theta, state = theta0, tx.init(theta0)
        step = jax.jit(lambda th, st, tx=tx: tx.update(prob.grad(th), st, th))
        for _ in range(20):
            upd, state = step(theta, state)
            theta = optax.apply_updates(theta, upd)
        outs.append(theta)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_on_the_engine_each_path_draws_its_own_noise():
    """GD plus isotropic noise of variance τσ² injected before ``sgd(lr)`` on ``½hθ²``:
    ``θ ← (1 − lr h)θ − lr ξ``, stationary variance ``lr²τσ²/(1 − (1 − lr h)²)``."""
    h, lr, tau, sigma2 = 2.0, 0.1, 0.5, 1.5
    prob = so.landscapes.quadratic(jnp.array([[h]]))
    tx = optax.chain(so.inject_noise(prob, so.IsotropicNoise(sigma2), temperature=tau, seed=0), optax.sgd(lr))
    dyn = so.OptaxDynamics(prob, tx, lr=lr)
    ens = so.simulate(dyn, jnp.zeros(1), key=jr.key(4), n_paths=20_000, n_steps=60, save_every=60)
    final = ens.final[:, 0]
    var = lr**2 * tau * sigma2 / (1 - (1 - lr * h) ** 2)
    emp = jnp.var(final, ddof=1)
    se = var * np.sqrt(2 / (final.shape[0] - 1))
    assert abs(float(emp) - var) < 4 * se
    # and the paths are independent: no two paths share their noise
    assert int(jnp.unique(jnp.round(final, 12)).shape[0]) == final.shape[0]


def test_bad_arguments(regression):
    prob, theta = regression
    with pytest.raises(ValueError, match="temperature"):
        so.inject_noise(prob, so.IsotropicNoise(1.0), temperature=-1.0)
    with pytest.raises(ValueError, match="noise must be a noise model"):
        so.inject_noise(prob, "hessian", temperature=1.0)
    with pytest.raises(ValueError, match="seed"):
        so.inject_noise(prob, so.IsotropicNoise(1.0), temperature=1.0, seed=1.5)
    with pytest.raises(ValueError, match="subsample"):
        so.inject_noise(prob, so.MinibatchNoise(), temperature=1.0, subsample=31)
    tx = so.inject_noise(prob, so.IsotropicNoise(1.0), temperature=1.0)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.zeros(3), tx.init(theta))
    with pytest.raises(ValueError, match="flat parameters"):
        tx.update({"w": jnp.zeros(3)}, tx.init(theta), {"w": theta})


def test_escape_study_injects_equal_step_traces():
    """The study's rows have the parameter-step noise trace of SGD at the sharp minimum,
    and the mini-batch shape there is SGD's own covariance (share along the sharp axis)."""
    esc = so.experiments.injected_noise_escape(kinds=("sgd", "isotropic", "minibatch"), n_paths=16, max_steps=50,
                                               key=jr.key(0))
    np.testing.assert_allclose(esc.step_trace, esc.step_trace[0], rtol=1e-10)
    np.testing.assert_allclose(esc.alignment[2], esc.alignment[0], rtol=1e-10)
    np.testing.assert_allclose(esc.alignment[1], 0.5, rtol=1e-10)
    assert np.all((esc.escaped >= 0) & (esc.escaped <= 1)) and esc.kinds == ("sgd", "isotropic", "minibatch")
    with pytest.raises(ValueError, match="kinds"):
        so.experiments.injected_noise_escape(kinds=("adam",), key=jr.key(0))


@pytest.fixture(scope="module")
def softmax_regression():
    """A 3-class softmax regression (d = 6) on 40 examples, away from its minimum."""
    kx, ky = jr.split(jr.key(5))
    x = jr.normal(kx, (40, 2))
    y = jr.randint(ky, (40,), 0, 3)
    logits = lambda w, ex: ex["x"] @ w.reshape(2, 3)  # noqa: E731
    prob = so.Problem(lambda w, ex: -jax.nn.log_softmax(logits(w, ex))[ex["y"]], {"x": x, "y": y},
                      params=jnp.zeros(6))
    return prob, jnp.array([0.3, -0.2, 0.5, 0.1, 0.4, -0.6]), logits


def test_true_fisher_factor_is_the_curvature_fisher(softmax_regression, regression):
    prob, theta, logits = softmax_regression
    noise = so.optimizers.FisherNoise(logits)
    fisher = so.curvature.curvature_operator(prob, theta, curvature=so.curvature.Fisher(logits))
    dense = jax.vmap(fisher.mv)(jnp.eye(6)).T
    np.testing.assert_allclose(np.asarray(noise.covariance(prob, theta)), np.asarray(dense), rtol=1e-10, atol=1e-12)
    z = jr.normal(jr.key(0), (noise.n_normals(prob, 6),))
    np.testing.assert_allclose(np.asarray(noise.apply_factor(prob, theta, z)),
                               np.asarray(noise.factor(prob, theta) @ z), rtol=1e-10, atol=1e-12)
    chunked = so.Problem(prob.loss_fn, prob.data, params=jnp.zeros(6), chunk_size=7)
    np.testing.assert_allclose(np.asarray(noise.apply_factor(chunked, theta, z)),
                               np.asarray(noise.apply_factor(prob, theta, z)), rtol=1e-10, atol=1e-12)
    # least squares: the Gaussian Fisher is the Hessian (1/N) Σ xxᵀ
    lsq, th = regression
    gauss = so.optimizers.FisherNoise(lambda w, ex: ex["x"] @ w, likelihood="gaussian")
    np.testing.assert_allclose(np.asarray(gauss.covariance(lsq, th)), np.asarray(lsq.hessian(th)), rtol=1e-10)


@pytest.mark.parametrize("kind", ["fisher", "eigen_hessian", "eigen_noise"])
def test_injected_fisher_and_eigen_noise_have_their_covariance(softmax_regression, kind):
    prob, theta, logits = softmax_regression
    noise = {"fisher": so.optimizers.FisherNoise(logits), "eigen_hessian": so.optimizers.EigenNoise(2),
             "eigen_noise": so.optimizers.EigenNoise(3, of="noise")}[kind]
    tau, n = 0.5, 40_000
    xi = _draws(so.inject_noise(prob, noise, temperature=tau, seed=3), theta, n)
    if kind == "fisher":
        target = tau * noise.covariance(prob, theta)
    else:  # the dense top-k eigen-part of H or D
        full = prob.hessian(theta) if kind == "eigen_hessian" else so.MinibatchNoise().covariance(prob, theta)
        lam, vec = jnp.linalg.eigh(full)
        top = vec[:, -noise.k:]
        target = tau * (top * jnp.clip(lam[-noise.k:], 0)) @ top.T
        np.testing.assert_allclose(np.asarray(tau * noise.covariance(prob, theta)), np.asarray(target), atol=1e-10)
    emp = jnp.cov(xi.T)
    se = jnp.sqrt((jnp.outer(jnp.diag(target), jnp.diag(target)) + target**2) / n)
    keep = se > 0
    assert float(jnp.max(jnp.where(keep, jnp.abs(emp - target) / jnp.where(keep, se, 1.0), 0.0))) < 4.5
    rank = np.linalg.matrix_rank(np.asarray(emp), tol=1e-8)
    assert rank == (noise.k if kind != "fisher" else 4)  # 3 classes: each example's F(z) has rank 2


def test_fisher_and_eigen_noise_arguments():
    with pytest.raises(ValueError, match="likelihood"):
        so.optimizers.FisherNoise(lambda w, ex: w, likelihood="poisson")
    with pytest.raises(ValueError, match="k must be"):
        so.optimizers.EigenNoise(0)
    with pytest.raises(ValueError, match="of must be"):
        so.optimizers.EigenNoise(1, of="fisher")
    prob = so.landscapes.quadratic(jnp.eye(2))
    with pytest.raises(ValueError, match="k=3 exceeds"):
        so.simulate(so.SGDSDE(prob, lr=0.1, batch_size=1, noise=so.optimizers.EigenNoise(3)), jnp.ones(2),
                    key=jr.key(0), n_paths=2, n_steps=2)
