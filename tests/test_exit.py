"""first_exit against ground truth: exact 1-D mean first-passage times, the reflection
principle for Brownian motion, and the engine's own paths."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

import sde_opt as so


def _flat_bm(d=1, variance=1.0):
    """Brownian motion W with Var W_t = t: SGDSDE on a zero loss, lr = B = 1."""
    prob = so.Problem(lambda th: 0.0 * jnp.sum(th), info={"dim": d})
    return so.SGDSDE(prob, lr=1.0, batch_size=1, noise=so.IsotropicNoise(variance))


def _double_well(h=1.0, kappa=8.0, temp=1 / 3, lr=0.05):
    prob = so.landscapes.double_well(barrier=h, curvature=kappa)
    a = float(prob.info["half_width"])
    v = 2 * temp / lr  # T = lr v / (2B), B = 1
    dyn = so.SGDSDE(prob, lr, 1, so.IsotropicNoise(v))
    grad = lambda x: 4 * h * x * (x**2 / a**2 - 1) / a**2
    return dyn, a, grad


def test_exit_times_match_simulate_paths():
    """With the same key, first_exit sees exactly the paths simulate produces: the exit
    time is the first grid time the simulated path is outside."""
    dyn, a, _ = _double_well()
    key, n, steps, dt = jr.key(3), 64, 400, 0.01
    region = so.HalfSpace(jnp.array([1.0]), -0.5 * a)
    ex = so.first_exit(dyn, jnp.array([-a]), region, key=key, n_paths=n, max_steps=steps, dt=dt, block=7)
    ens = so.simulate(dyn, jnp.array([-a]), key=key, n_paths=n, n_steps=steps, dt=dt)
    out = np.asarray(ens.ys[:, 1:, 0] >= -0.5 * a)
    first = np.where(out.any(1), out.argmax(1) + 1, steps)
    assert np.array_equal(np.asarray(ex.exited), out.any(1))
    np.testing.assert_allclose(np.asarray(ex.times), first * dt, rtol=1e-12)
    hit = np.asarray(ex.exited)
    np.testing.assert_allclose(np.asarray(ex.positions)[hit, 0], np.asarray(ens.ys)[hit, first[hit], 0])
    assert int(ex.n_steps_run) <= steps


@pytest.mark.slow
def test_double_well_mean_exit_time_matches_exact_quadrature_and_kramers():
    """1-D double well, isotropic noise, ΔL/T = 3: the sample mean exit time across
    x = a/2 agrees with the exact mean first-passage time (quadrature) within 3 standard
    errors (SE = sample std / √n, every path exits: horizon = 10 × the exact mean), and with
    Kramers within Kramers' own O(T/ΔL) error."""
    temp, h = 1 / 3, 1.0
    dyn, a, grad = _double_well(h=h, temp=temp)
    exact = so.theory.mean_exit_time_1d(lambda x: -grad(x), lambda x: 2 * temp + 0 * x, -a, -3 * a, 0.5 * a)
    dt, n = 0.004, 1500
    ex = so.first_exit(dyn, jnp.array([-a]), so.HalfSpace(jnp.array([1.0]), 0.5 * a), key=jr.key(0),
                       n_paths=n, max_steps=int(10 * exact / dt), dt=dt, bridge=True)
    t = np.asarray(ex.times)
    assert bool(jnp.all(ex.exited))
    se = t.std(ddof=1) / np.sqrt(n)
    assert abs(t.mean() - exact) < 3 * se, (t.mean(), exact, se)
    kramers = 1 / so.theory.kramers_rate(h, 8.0, -4.0, temp)
    assert abs(kramers - exact) / exact < temp / h  # Kramers' bias is O(T/ΔL)
    assert abs(t.mean() - kramers) / kramers < temp / h + 3 * se / kramers


def test_brownian_bridge_removes_discrete_monitoring_bias():
    """Brownian motion started at 0, exit across x = b by time t: the reflection principle
    gives P = 2 Φ̄(b/√t). On a coarse grid (dt = t/20) the plain monitor misses crossings
    (biased low by many SEs); the bridge correction is within 3 binomial SEs."""
    dyn = _flat_bm()
    b, horizon, steps, n = 1.0, 1.0, 20, 20_000
    exact = 2 * stats.norm.sf(b / np.sqrt(horizon))
    se = np.sqrt(exact * (1 - exact) / n)
    region = so.HalfSpace(jnp.array([1.0]), b)
    kw = dict(key=jr.key(1), n_paths=n, max_steps=steps, dt=horizon / steps)
    plain = float(jnp.mean(so.first_exit(dyn, jnp.zeros(1), region, **kw).exited))
    bridged = float(jnp.mean(so.first_exit(dyn, jnp.zeros(1), region, bridge=True, **kw).exited))
    assert exact - plain > 5 * se  # the grid misses ~15% of the exits here
    assert abs(bridged - exact) < 3 * se, (bridged, exact, se)


def test_ball_bridge_in_two_dimensions():
    """2-D Brownian motion leaving the unit disc: the bridge (tangent-plane approximation)
    moves the exit probability by time 0.25 towards a fine-grid reference."""
    dyn = _flat_bm(d=2)
    region = so.Ball(jnp.zeros(2), 1.0)
    n, horizon = 20_000, 0.25
    fine = so.first_exit(dyn, jnp.zeros(2), region, key=jr.key(2), n_paths=n, max_steps=2000, dt=horizon / 2000,
                         bridge=True)
    ref = float(jnp.mean(fine.exited))
    kw = dict(key=jr.key(3), n_paths=n, max_steps=10, dt=horizon / 10)
    plain = float(jnp.mean(so.first_exit(dyn, jnp.zeros(2), region, **kw).exited))
    bridged = float(jnp.mean(so.first_exit(dyn, jnp.zeros(2), region, bridge=True, **kw).exited))
    se = np.sqrt(2 * ref * (1 - ref) / n)
    assert abs(bridged - ref) < 4 * se < abs(plain - ref)


def test_regions_and_stopped_paths():
    """Every region kind; paths that left are frozen where they were seen outside."""
    prob = so.landscapes.double_well(barrier=0.5, curvature=4.0, dim=2)
    minima = prob.info["minima"]
    dyn = so.SGDSDE(prob, 0.05, 1, so.IsotropicNoise(4.0))
    x0 = minima[0]
    regions = {
        "ball": so.Ball(x0, 0.5),
        "half": so.HalfSpace(jnp.array([1.0, 0.0]), 0.0),
        "loss": so.LossAbove(0.3),
        "voronoi": so.CloserToOther(minima, home=0),
        "fn": lambda th: th[0] > 0.0,
    }
    for name, region in regions.items():
        ex = so.first_exit(dyn, x0, region, key=jr.key(4), n_paths=200, max_steps=3000)
        assert int(jnp.sum(ex.exited)) > 100, name
        pos = ex.positions[ex.exited]
        if name == "ball":
            assert bool(jnp.all(jnp.linalg.norm(pos - x0, axis=1) >= 0.5))
        if name in ("half", "voronoi", "fn"):
            assert bool(jnp.all(pos[:, 0] >= 0.0))
        if name == "loss":
            assert bool(jnp.all(jnp.array([prob.loss(p) for p in pos]) >= 0.3))


def test_early_stop_runs_only_until_the_last_exit():
    dyn = _flat_bm()
    ex = so.first_exit(dyn, jnp.zeros(1), so.Ball(jnp.zeros(1), 0.2), key=jr.key(5), n_paths=100,
                       max_steps=100_000, dt=1e-3, block=16)
    assert bool(jnp.all(ex.exited))
    last = int(round(float(jnp.max(ex.times)) / 1e-3))
    assert last <= int(ex.n_steps_run) < last + 16


def test_censoring_and_divergence_are_recorded():
    prob = so.landscapes.quadratic(jnp.eye(1) * 10.0)
    gd = so.NoisyGD(prob, lr=0.5, batch_size=1, noise=so.IsotropicNoise(1e-6))  # lr·λ = 5 > 2: diverges
    ex = so.first_exit(gd, jnp.ones(1), lambda th: th[0] != th[0] + 0.0, key=jr.key(6), n_paths=8,
                       max_steps=5000)
    assert bool(jnp.all(ex.diverged)) and bool(jnp.all(ex.exited))
    dyn, a, _ = _double_well()
    ex = so.first_exit(dyn, jnp.array([-a]), so.HalfSpace(jnp.array([1.0]), 0.9 * a), key=jr.key(7),
                       n_paths=32, max_steps=10)
    assert not bool(jnp.any(ex.exited))
    np.testing.assert_allclose(np.asarray(ex.times), float(ex.horizon))
    assert not bool(jnp.any(ex.diverged))


def test_bad_input_raises():
    dyn, a, _ = _double_well()
    region = so.HalfSpace(jnp.array([1.0]), 0.0)
    with pytest.raises(ValueError, match="y0"):
        so.first_exit(dyn, jnp.array([1.0]), region, key=jr.key(0), n_paths=4, max_steps=10)
    with pytest.raises(ValueError, match="bridge"):
        so.first_exit(so.SGD(so.landscapes.perturbed_sum(so.landscapes.double_well(), key=jr.key(0)), 0.1, 1),
                      jnp.array([-2.0]), region, key=jr.key(0), n_paths=4, max_steps=10, bridge=True)
    with pytest.raises(ValueError, match="bridge"):
        so.first_exit(dyn, jnp.array([-a]), so.LossAbove(0.5), key=jr.key(0), n_paths=4, max_steps=10, bridge=True)
    with pytest.raises(ValueError, match="max_steps"):
        so.first_exit(dyn, jnp.array([-a]), region, key=jr.key(0), n_paths=4, max_steps=0)
    with pytest.raises(ValueError, match="exit_fn"):
        so.first_exit(dyn, jnp.array([-a]), "outside", key=jr.key(0), n_paths=4, max_steps=10)
    with pytest.raises(ValueError, match="radius"):
        so.Ball(jnp.zeros(1), -1.0)
    with pytest.raises(ValueError, match="normal"):
        so.HalfSpace(jnp.zeros(2))
