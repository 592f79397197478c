"""SVAG (sde_opt.optimizers): the estimator's moments, and convergence to the SDE limit as ℓ grows.

The SGD case is checked against exact moments: on a 1-D finite sum of quadratics
fᵢ(θ) = ½aᵢ(θ − cᵢ)² the gradient is affine, so E θ and E θ² of SVAG obey a closed
recursion and those of the SDE a linear ODE (solved by a matrix exponential)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg as sla

import sde_opt as so

A = np.array([0.6, 1.4, 0.8, 1.2, 1.0, 0.7, 1.3, 1.0])
C = np.array([2.0, -1.0, 1.5, -2.5, 0.5, -0.5, 3.0, -1.5])
PROB = so.Problem(lambda th, ex: 0.5 * ex["a"] * (th[0] - ex["c"]) ** 2, {"a": jnp.array(A), "c": jnp.array(C)},
                  name="quadratic_sum_1d")
# gradient of fᵢ: aᵢθ − bᵢ
B_ = A * C
ABAR, BBAR = A.mean(), B_.mean()
VA, VB, CAB = A.var(), B_.var(), np.mean((A - ABAR) * (B_ - BBAR))


def _svag_moments(lr, batch, ell, k, m=0.0, q=0.0):
    """Exact (E θ, E θ²) after k SVAG steps: E[g|θ] = āθ − b̄, Var[g|θ] = ℓ·D(θ)/B."""
    h = lr / ell
    for _ in range(k):
        d = VA * q - 2 * CAB * m + VB  # E D(θ)
        mean_sq = ABAR**2 * q - 2 * ABAR * BBAR * m + BBAR**2
        m, q = m - h * (ABAR * m - BBAR), q - 2 * h * (ABAR * q - BBAR * m) + h * h * (mean_sq + ell / batch * d)
    return m, q


def _sde_moments(lr, batch, t, m=0.0, q=0.0):
    """Exact (E θ, E θ²) of dθ = −(āθ − b̄)dt + √(lr/B · D(θ)) dW at time t."""
    gen = np.array([[0.0, 0.0, 0.0],
                    [BBAR, -ABAR, 0.0],
                    [lr / batch * VB, 2 * BBAR - 2 * lr / batch * CAB, -2 * ABAR + lr / batch * VA]])
    out = sla.expm(gen * t) @ np.array([1.0, m, q])
    return out[1], out[2]


def test_svag_weights_and_estimator_moments():
    for ell in (1.0, 2.0, 8.0, 100.0):
        w1, w2 = so.optimizers.svag_weights(ell)
        assert float(w1 + w2) == pytest.approx(1.0) and float(w1**2 + w2**2) == pytest.approx(ell)
    th = jnp.array([0.7])
    keys = jax.vmap(lambda i: jr.fold_in(jr.key(0), i))(jnp.arange(40_000))
    g = jax.jit(jax.vmap(lambda k: so.optimizers.svag_gradient(PROB, th, k, 2, 4.0)))(keys)[:, 0]
    d = float(jnp.var(PROB.per_example_grads(th)[:, 0]))
    se_mean = float(jnp.std(g)) / np.sqrt(g.size)
    assert abs(float(g.mean()) - float(PROB.grad(th)[0])) < 4 * se_mean
    # variance ℓ·D/B = 2D; SE of a sample variance ≈ sqrt((m4 − s⁴)/n)
    c = g - g.mean()
    se_var = float(jnp.sqrt((jnp.mean(c**4) - jnp.mean(c**2) ** 2) / g.size))
    assert abs(float(jnp.var(g)) - 2.0 * d) < 4 * se_var


def test_svag_sgd_converges_to_the_sde_like_one_over_ell():
    """lr = 0.5, B = 1, θ₀ = 0, t = 2, ℓ = 1, 2, 4, 8 (ℓ = 1 is SGD), statistic E θ².

    * exact: E θ²_SVAG − E θ²_SDE = 0.358, 0.154, 0.072, 0.035: slope −1.12 ∈ [−1.3, −0.7];
    * engine (40,000 paths each, via so.experiments.svag_study): every SVAG estimate within 4 SE of
      its exact value, the differences to the exact SDE value above 3 SE, and their fitted
      slope within ±0.3 of −1;
    * the simulated SDE limit (Euler–Maruyama at lr/128) within 4 SE + its O(dt) bias of
      the exact value."""
    lr, t1, ells, n = 0.5, 2.0, [1, 2, 4, 8], 40_000
    _, q_sde = _sde_moments(lr, 1, t1)
    exact = np.array([_svag_moments(lr, 1, ell, int(round(t1 * ell / lr)))[1] for ell in ells])
    s_exact = np.polyfit(np.log(ells), np.log(exact - q_sde), 1)[0]
    assert -1.3 <= s_exact <= -0.7, s_exact
    res = so.experiments.svag_study(lambda ell: so.optimizers.SVAG(PROB, lr, 1, ell), ells, so.optimizers.SVAG(PROB, lr, 1, 1).limit(), jnp.zeros(1),
                        key=jr.key(1), n_paths=n, t1=t1, n_saves=1, statistic=lambda th: th[0] ** 2)
    mc, se = res.mean[:, -1], res.se[:, -1]
    print("exact", exact, "mc", mc, "se", se, "sde", q_sde, "limit", res.limit_mean[-1], res.limit_se[-1])
    assert np.all(np.abs(mc - exact) < 4 * se), (mc, exact, se)
    diff = mc - q_sde
    assert np.all(diff > 3 * se), (diff, se)
    s = np.polyfit(np.log(ells), np.log(diff), 1)[0]
    assert abs(s + 1.0) <= 0.3, s
    assert abs(res.limit_mean[-1] - q_sde) < 4 * res.limit_se[-1] + 0.01


@pytest.mark.parametrize("which", ["rmsprop", "adam_warm"])
def test_adaptive_svag_statistics_converge_like_one_over_ell(which):
    """Adaptive SVAG (square-root rule at κ = 1/ℓ on the SVAG estimator) for ℓ = 1, 2, 4, 8
    from θ₀ = 3 (gradient ≈ noise, so ℓ = 1 is far from the noise-dominated SDE regime),
    lr = 0.2, c = (1 − β₂)/lr² = 4, t = 0.6, 10,000 paths: the successive differences of
    E θ² are above 3 SE and shrink with a fitted slope within ±0.3 of −1 (measured: RMSprop
    −1.05, warm-started Adam −0.94)."""
    lr, t1, ells, n = 0.2, 0.6, [1, 2, 4, 8], 10_000
    th0 = jnp.array([3.0])
    s0 = float(jnp.var(PROB.per_example_grads(th0)))
    if which == "rmsprop":
        make = lambda ell: so.optimizers.svag_rmsprop(PROB, lr, 1, ell, decay=1 - 4 * lr**2, initial_scale=s0)  # noqa: E731
    else:
        make = lambda ell: so.optimizers.svag_adam(PROB, lr, 1, ell, b1=1 - 8 * lr**2, b2=1 - 4 * lr**2,  # noqa: E731
                                        initial_scale=s0, bias_correction=False)
    means, ses = [], []
    for i, ell in enumerate(ells):
        dyn = make(ell)
        assert float(dyn.natural_dt()) == pytest.approx(lr**2 / ell)
        k = int(round(t1 / float(dyn.natural_dt())))
        ens = so.simulate(dyn, th0, key=jr.key(i), n_paths=n, n_steps=k, save_every=k)
        x2 = np.asarray(ens.final[:, 0]) ** 2
        means.append(x2.mean())
        ses.append(x2.std(ddof=1) / np.sqrt(n))
    means, ses = np.array(means), np.array(ses)
    d = np.abs(np.diff(means))
    d_se = np.sqrt(ses[1:] ** 2 + ses[:-1] ** 2)
    s = np.polyfit(np.log(ells[:-1]), np.log(d), 1)[0]
    print(which, "means", means, "diffs", d, "se", d_se, "slope", s)
    assert np.all(d > 3 * d_se), (d, d_se)
    assert abs(s + 1.0) <= 0.3, s


def test_svag_plumbing():
    dyn = so.optimizers.SVAG(PROB, 0.2, 2, 8)
    assert float(dyn.natural_dt()) == pytest.approx(0.025)
    lim = dyn.limit()
    assert isinstance(lim, so.SGDSDE) and lim.batch_size == 2
    assert isinstance(so.optimizers.svag_limit_adam(PROB, 0.1, 2), so.optimizers.AdamSDE)
    assert isinstance(so.optimizers.svag_limit_rmsprop(PROB, 0.1, 2), so.optimizers.RMSpropSDE)
    with pytest.raises(ValueError, match="ell"):
        so.optimizers.SVAG(PROB, 0.2, 2, 0.5)
    with pytest.raises(ValueError, match="finite-sum"):
        so.optimizers.SVAG(so.landscapes.quadratic(jnp.eye(1)), 0.2, 1, 2)
    with pytest.raises(ValueError, match="ell"):
        so.optimizers.svag_rmsprop(PROB, 0.1, 1, 0.5)


def test_svag_study_round_trip(tmp_path):
    from result_helpers import round_trip

    res = so.experiments.svag_study(lambda ell: so.optimizers.SVAG(PROB, 0.5, 1, ell), [1, 2],
                                    so.optimizers.SVAG(PROB, 0.5, 1, 1).limit(), jnp.zeros(1), key=jr.key(1), n_paths=20,
                                    t1=1.0, n_saves=2, limit_refine=2)
    assert isinstance(round_trip(tmp_path, res, "svag"), so.experiments.SVAGStudy)
