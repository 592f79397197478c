"""Scaling rules (sde_opt.optimizers): the maps, the closed-form breakdown of the linear rule on a
quadratic, and the measured breakdown with real mini-batch SGD."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so


def test_linear_rule_maps_hyperparameters():
    hp = so.optimizers.linear_scaling_rule(4, lr=0.1, batch_size=32, n_steps=1000, momentum=0.9)
    assert hp == {"lr": pytest.approx(0.4), "batch_size": 128, "n_steps": 250, "momentum": 0.9}
    assert so.optimizers.linear_scaling_rule(0.5, lr=0.1, batch_size=32)["batch_size"] == 16
    with pytest.raises(ValueError, match="whole number"):
        so.optimizers.linear_scaling_rule(3, lr=0.1, n_steps=100)
    with pytest.raises(ValueError, match="kappa"):
        so.optimizers.linear_scaling_rule(0.0, lr=0.1)


def test_sqrt_rule_keeps_the_adaptive_sde_invariant():
    """The RMSprop/Adam SDEs depend on σ₀ = lr·σ (σ² ∝ 1/B), c = (1 − β)/lr², ε₀ = ε·lr and
    v/σ²: all unchanged by the square-root rule, and the SDE time lr²·n_steps too."""
    base = dict(lr=1e-3, batch_size=64, b1=0.9, b2=0.999, eps=1e-8, initial_scale=0.5, n_steps=4000)
    for kappa in (0.25, 4.0):
        hp = so.optimizers.sqrt_scaling_rule(kappa, **base)
        sigma2 = lambda b: 1.0 / b  # noqa: E731  (gradient noise variance ∝ 1/B)
        assert hp["lr"] ** 2 * sigma2(hp["batch_size"]) == pytest.approx(base["lr"] ** 2 * sigma2(64))
        for name in ("b1", "b2"):
            assert (1 - hp[name]) / hp["lr"] ** 2 == pytest.approx((1 - base[name]) / base["lr"] ** 2)
        assert hp["eps"] * hp["lr"] == pytest.approx(base["eps"] * base["lr"])
        assert hp["initial_scale"] / sigma2(hp["batch_size"]) == pytest.approx(base["initial_scale"] / sigma2(64))
        assert hp["n_steps"] * hp["lr"] ** 2 == pytest.approx(base["n_steps"] * base["lr"] ** 2)
    assert so.optimizers.sqrt_scaling_rule(4, lr=0.1, eps=1e-8, eps_in_sqrt=True)["eps"] == pytest.approx(2.5e-9)
    with pytest.raises(ValueError, match="b1"):
        so.optimizers.sqrt_scaling_rule(20, lr=0.1, b1=0.9)


def test_linear_rule_quadratic_closed_form():
    """D = H: E L_SGD = Σ λ lr/(2B(2 − κ lr λ)), E L_SDE = Σ λ lr/(4B); κ* = 2/(lr λ_max)."""
    lam = np.array([1.0, 10.0])
    lr, b = 0.02, 4
    res = so.optimizers.linear_rule_quadratic(jnp.diag(jnp.array(lam)), lr, b, [1, 2, 4, 8, 10, 20])
    k = res.kappas
    want = np.array([np.sum(lam * lr / (2 * b * (2 - kk * lr * lam))) if kk * lr * 10 < 2 else np.inf for kk in k])
    np.testing.assert_allclose(res.sgd_loss, want, rtol=1e-6)
    np.testing.assert_allclose(res.sde_loss, np.sum(lam * lr / (4 * b)), rtol=1e-6)
    assert float(res.kappa_max) == pytest.approx(10.0)
    assert res.ratio[0] > 1.0 and res.ratio[0] < 1.15 and np.all(np.diff(res.ratio[:-1]) > 0) and np.isinf(res.ratio[-1])


def test_linear_rule_breaks_near_the_stability_limit():
    """Real SGD on linear regression (N = 64, d = 2) under the linear rule from lr = 0.05,
    B = 2, to t = 4.8 (a whole number of steps at every κ), 3,000 paths: E L agrees with the shared SDE prediction at κ = 1, 2
    (|z| < 4) and departs from it (z > 6) as κ·lr approaches 2/λ_max; the reported κ*
    is 2/(lr λ_max) of the Hessian."""
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=64, dim=2, noise_std=1.0)
    res = so.experiments.linear_rule_breakdown(prob, 0.05, 2, [1, 2, 16, 24], jnp.zeros(2), key=jr.key(3), n_paths=3000,
                                   t1=4.8)
    print(res)
    lam = float(np.linalg.eigvalsh(np.asarray(prob.info["hessians_min"][0])).max())
    assert float(res.kappa_max) == pytest.approx(2 / (0.05 * lam), rel=1e-6)
    assert np.all(np.abs(res.z[:2]) < 4), res.z
    assert res.z[-1] > 6, res.z
    assert np.all(res.sweep.diverged == 0)
    with pytest.raises(ValueError, match="whole number of steps"):
        so.experiments.linear_rule_breakdown(prob, 0.05, 2, [1, 3], jnp.zeros(2), key=jr.key(3), n_paths=10, t1=1.0)


def test_sweep_with_the_sqrt_rule_for_adam():
    """Adam with real batches in the noise-dominated regime, run to the same time
    t = Σ lr² (the Adam SDE's clock): the square-root rule keeps E L within 4 SE between
    κ = 1 and κ = 4; using lr ×κ instead (the linear rule for the step, everything else as
    the square-root rule) moves it by many SE."""
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=256, dim=2, noise_std=1.0)
    base = dict(lr=0.02, batch_size=2, b1=0.98, b2=0.99, dt=0.02**2)

    def make(hp):
        return so.OptaxDynamics(prob, so.optimizers.adam_moments(hp["lr"], hp["b1"], hp["b2"]), hp["batch_size"], lr=hp["dt"])

    def sqrt_rule(k, **hp):  # steps ÷κ: time per step ×κ
        return {**so.optimizers.sqrt_scaling_rule(k, **hp), "dt": k * hp["dt"]}

    def linear_step(k, **hp):
        return {**sqrt_rule(k, **hp), "lr": k * hp["lr"]}

    kw = dict(key=jr.key(5), n_paths=2000, t1=0.4)
    sq = so.experiments.scaling_rule_sweep(make, sqrt_rule, base, [1, 4], jnp.zeros(2), **kw)
    lin = so.experiments.scaling_rule_sweep(make, linear_step, base, [1, 4], jnp.zeros(2), **kw)
    print("sqrt", sq.mean, sq.se, "linear", lin.mean, lin.se)
    gap = lambda r: abs(r.mean[1] - r.mean[0]) / np.hypot(*r.se)  # noqa: E731
    assert gap(sq) < 4, sq
    assert gap(lin) > 8, lin


def test_scaling_results_round_trip(tmp_path):
    from result_helpers import round_trip

    quad = so.optimizers.linear_rule_quadratic(jnp.diag(jnp.array([1.0, 10.0])), 0.05, 1, [1, 2, 8])
    assert np.isinf(quad.ratio[-1])  # past κ*: inf survives the trip
    round_trip(tmp_path, quad, "quadratic")
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2, noise_std=1.0)
    res = so.experiments.linear_rule_breakdown(prob, 0.05, 2, [1, 2], jnp.zeros(2), key=jr.key(3), n_paths=20, t1=0.4)
    loaded = round_trip(tmp_path, res, "breakdown")
    assert isinstance(loaded.sweep, so.experiments.ScalingSweep)
