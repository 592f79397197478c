"""Optimizers as ODEs and SDEs (sde_opt.optimizers), checked against their discrete optimizers.

Orders are measured as fitted log–log slopes of the error against the model's natural step
``dt`` (the SDE time of one optimizer step: √lr for momentum and Nesterov, lr for the RMSprop
and Adam flows, lr² for AdaGrad and for the SDEs of Malladi et al.). Theory: first order in
``dt`` for every model here (weak order for the SDEs with Gaussian gradient noise).
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sde_opt as so

DOUBLE_WELL = so.landscapes.double_well(barrier=1.0, curvature=2.0, dim=2, transverse=[3.0])
THETA0 = jnp.array([0.5, 1.0])
LOGCOSH = so.Problem(lambda th: jnp.sum(jnp.log(jnp.cosh(th))), name="logcosh")


def _slope(x, y):
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.abs(np.asarray(y, float))), 1)[0])


def _flow_reference(model, theta0, t1, steps=2048):
    """The model's solution at t1: Euler with steps and 2·steps, Richardson-combined (O(h²))."""

    def euler(n):
        ens = so.simulate(model, theta0, key=jr.key(0), n_paths=1, n_steps=n, dt=t1 / n, save_every=n)
        return np.asarray(ens.ys[0, -1])

    return 2 * euler(2 * steps) - euler(steps)


# ------------------------------------------------------------------ deterministic flows

FLOWS = {
    # name: (model at natural step h, values of h, horizon)
    "heavy_ball": (lambda h: so.optimizers.HeavyBall.from_friction(DOUBLE_WELL, h, 1.0), [0.1, 0.05, 0.025], 2.0),
    "nesterov": (lambda h: so.optimizers.NesterovFlow(DOUBLE_WELL, h**2), [0.1, 0.05, 0.025], 2.0),
    "adagrad": (lambda lr: so.optimizers.AdaGradFlow.from_accumulator(DOUBLE_WELL, lr, 0.5), [0.2, 0.1, 0.05], 1.0),
    "rmsprop": (lambda lr: so.optimizers.RMSpropFlow(DOUBLE_WELL, lr, 1 - lr, initial_scale=1.0), [0.04, 0.02, 0.01], 1.0),
    "rmsprop_global": (
        lambda lr: so.optimizers.RMSpropFlow(DOUBLE_WELL, lr, 1 - lr, initial_scale=1.0, per_coordinate=False),
        [0.04, 0.02, 0.01], 1.0,
    ),
    "adam": (lambda lr: so.optimizers.AdamFlow(DOUBLE_WELL, lr, 1 - 2 * lr, 1 - lr), [0.04, 0.02, 0.01], 1.0),
}


@pytest.mark.parametrize("name", list(FLOWS))
def test_discrete_optimizer_converges_to_its_flow_at_first_order(name):
    """The optax optimizer (``model.discrete()``, full batch) against its ODE, solved to
    O(h²) by Richardson-extrapolated Euler, at a fixed time: global error O(dt), slope
    within ±0.3 of 1. Measured (float64): heavy ball 1.02, Nesterov 0.97, AdaGrad 1.00,
    RMSprop 0.97, global-norm RMSprop 1.00, Adam 1.00."""
    make, hs, t1 = FLOWS[name]
    ref = _flow_reference(make(hs[0]), THETA0, t1)
    dts, errs = [], []
    for h in hs:
        model = make(h)
        dt = float(model.natural_dt())
        k = int(round(t1 / dt))
        assert abs(k * dt - t1) < 1e-9
        ens = so.simulate(model.discrete(), THETA0, key=jr.key(0), n_paths=1, n_steps=k, save_every=k)
        dts.append(dt)
        errs.append(np.linalg.norm(np.asarray(ens.ys[0, -1]) - ref))
    s = _slope(dts, errs)
    print(name, "errors", np.array(errs), "slope", round(s, 3))
    assert abs(s - 1.0) <= 0.3, (name, s, errs)


def test_rmsprop_from_zero_second_moment_has_a_half_order_initial_layer():
    """optax's default ``initial_scale=0`` makes RMSprop's first steps sign-like jumps of
    size ~√(lr/c): the flow (v(0) = 0, θ' ~ −sign(∇L)/√(ct)) is only matched to O(√lr).
    Measured slope 0.56."""
    make = lambda lr: so.optimizers.RMSpropFlow(DOUBLE_WELL, lr, 1 - lr)  # noqa: E731
    # the start is singular (θ' ~ 1/√t): an adaptive solver, not fixed-step Euler
    ref = np.asarray(so.solve_diffrax(make(0.01), THETA0, key=jr.key(0), n_paths=1, t1=1.0, ts=jnp.array([0.0, 1.0]),
                                      stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-12),
                                      max_steps=10**6).ys[0, -1])
    errs = []
    lrs = [0.04, 0.02, 0.01]
    for lr in lrs:
        k = int(round(1.0 / lr))
        ens = so.simulate(make(lr).discrete(), THETA0, key=jr.key(0), n_paths=1, n_steps=k, save_every=k)
        errs.append(np.linalg.norm(np.asarray(ens.ys[0, -1]) - ref))
    s = _slope(lrs, errs)
    assert abs(s - 0.5) <= 0.3, (s, errs)


def test_models_solve_with_diffrax_on_their_full_state():
    """``solve_diffrax`` integrates the (θ, v) state and returns θ: Tsit5 agrees with the
    Richardson–Euler reference to 1e-6 for heavy ball and for Nesterov (singular friction)."""
    for model in (so.optimizers.HeavyBall.from_friction(DOUBLE_WELL, 0.1, 1.0), so.optimizers.NesterovFlow(DOUBLE_WELL, 0.01)):
        ens = so.solve_diffrax(model, THETA0, key=jr.key(0), n_paths=1, t1=2.0, ts=jnp.array([0.0, 2.0]),
                               stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-12))
        assert ens.ys.shape == (1, 2, 2)
        np.testing.assert_allclose(np.asarray(ens.ys[0, 0]), np.asarray(THETA0))
        ref = _flow_reference(model, THETA0, 2.0, steps=4096)
        assert np.linalg.norm(np.asarray(ens.ys[0, -1]) - ref) < 1e-5


# ------------------------------------------------------------------ SDEs, weak order with coupled noise

SDES = {
    # name: (model at h, values of h, horizon, statistic, paths)
    "heavy_ball_sde": (
        lambda h: so.optimizers.HeavyBall.from_friction(LOGCOSH, h, 1.0, batch_size=1, noise=so.IsotropicNoise(1.0)),
        [0.2, 0.1, 0.05], 2.0, lambda y: y[:, 0], 400,
    ),
    "rmsprop_sde": (
        lambda lr: so.optimizers.RMSpropSDE(LOGCOSH, lr, 1, so.ScaledNoise(so.IsotropicNoise(1.0), 1 / lr**2), 1 - lr**2,
                                 initial_scale=1 / lr**2),
        [0.2828, 0.2, 0.1414], 1.0, lambda y: y[:, 0], 5000,
    ),
    "adam_sde_warm": (
        lambda lr: so.optimizers.AdamSDE(LOGCOSH, lr, 1, so.ScaledNoise(so.IsotropicNoise(1.0), 1 / lr**2), 1 - 2 * lr**2,
                              1 - lr**2, initial_scale=1 / lr**2, bias_correction=False),
        [0.2828, 0.2, 0.1414], 1.0, jax.vmap(LOGCOSH.loss), 5000,
    ),
}


@pytest.mark.parametrize("name", list(SDES))
def test_sde_weak_error_against_gaussian_noise_optimizer_is_first_order(name):
    """Discrete optimizer with Gaussian gradient noise (``model.discrete()``) against the
    SDE, path by path on the same Brownian increments (``coupled_paths``, the SDE taking 4
    Euler–Maruyama substeps per optimizer step; the reference's own bias is ∝ dt too, so it
    does not bend the slope). Weak error of E f(θ_T) on log cosh in 1-D, with the SE of the
    mean path difference: |error| > 5 SE at every step, slope within ±0.3 of 1.
    Measured: heavy ball 0.99 (error/SE > 300), RMSprop SDE 1.07 (error/SE 8–17),
    warm-started Adam SDE 0.88 (error/SE 17–23)."""
    make, hs, t1, stat, n = SDES[name]
    dts, errs, ses = [], [], []
    for i, h in enumerate(hs):
        model = make(h)
        dt = float(model.natural_dt())
        k = int(round(t1 / dt))
        disc, cont = so.optimizers.coupled_paths(model.discrete(), model, jnp.array([2.0]), key=jr.key(i), n_paths=n,
                                      n_steps=k, refine=4, save_every=k)
        diff = np.asarray(stat(disc.final) - stat(cont.final))
        dts.append(dt)
        errs.append(diff.mean())
        ses.append(diff.std(ddof=1) / np.sqrt(n))
    errs, ses = np.array(errs), np.array(ses)
    s = _slope(dts, errs)
    print(name, "errors", errs, "se", ses, "slope", round(s, 3))
    assert np.all(np.abs(errs) > 5 * ses), (errs, ses)
    assert abs(s - 1.0) <= 0.3, (name, s, errs)


def test_noisy_optax_sgd_is_the_euler_maruyama_step_of_sgd_sde_path_by_path():
    prob = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    noise = so.HessianNoise(0.5)
    lr = 0.05
    sde = so.SGDSDE(prob, lr, 2, noise)
    opt = so.optimizers.NoisyOptax(prob, optax.sgd(lr), 2, noise, dt=lr)
    a = so.simulate(sde, jnp.ones(2), key=jr.key(3), n_paths=5, n_steps=20)
    b = so.simulate(opt, jnp.ones(2), key=jr.key(3), n_paths=5, n_steps=20)
    np.testing.assert_allclose(np.asarray(a.ys), np.asarray(b.ys), rtol=1e-12, atol=1e-12)


def test_coupled_paths_share_the_brownian_increment():
    """With refine = m the optimizer's normal is Σ zᵢ/√m of the model's m substep normals,
    so coupled paths stay close (their difference is a strong error), while independent
    paths would differ by about √2 times the spread of θ."""
    prob = so.landscapes.quadratic(jnp.eye(1))
    model = so.optimizers.HeavyBall.from_friction(prob, 0.1, 1.0, batch_size=1, noise=so.IsotropicNoise(1.0))
    for m in (4,):
        disc, cont = so.optimizers.coupled_paths(model.discrete(), model, jnp.ones(1), key=jr.key(0), n_paths=400,
                                      n_steps=20, refine=m, save_every=20)
        assert disc.ys.shape == cont.ys.shape == (400, 2, 1)
        coupled = float(jnp.std(disc.final - cont.final))
        independent = float(jnp.sqrt(2.0) * jnp.std(cont.final))
        assert 0.0 < coupled < 0.2 * independent, (m, coupled, independent)


# ------------------------------------------------------------------ any optax optimizer on the engine

OPTIMIZERS = {
    "sgd": optax.sgd(0.05),
    "momentum": optax.sgd(0.05, momentum=0.9),
    "nesterov": optax.sgd(0.05, momentum=0.9, nesterov=True),
    "adagrad": optax.adagrad(0.1),
    "rmsprop": optax.rmsprop(0.01),
    "adam": optax.adam(0.05),
    "adamw": optax.adamw(0.05, weight_decay=0.1),
    "lion": optax.lion(0.01),
    "clipped_adam": optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.05)),
    "nesterov_sbc": so.optimizers.nesterov_sbc(0.05),
    "global_rmsprop": so.optimizers.global_rmsprop(0.01),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optax_optimizer_runs_on_the_engine_and_matches_a_plain_loop(name):
    """``so.OptaxDynamics`` takes any GradientTransformation (with params-dependent updates,
    counts, chains) unchanged; full-batch paths equal a hand-written optax loop."""
    opt = OPTIMIZERS[name]
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=3)
    theta0 = jnp.array([1.0, -1.0, 0.5])
    ens = so.simulate(so.OptaxDynamics(prob, opt, None), theta0, key=jr.key(1), n_paths=2, n_steps=15)
    theta, state = theta0, opt.init(theta0)
    for _ in range(15):
        updates, state = opt.update(prob.grad(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_allclose(np.asarray(ens.ys[:, -1]), np.broadcast_to(np.asarray(theta), (2, 3)), rtol=1e-10,
                               atol=1e-12)


def test_optax_with_real_minibatches_and_with_gaussian_noise():
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=3)
    opt = OPTIMIZERS["clipped_adam"]
    for dyn in (so.OptaxDynamics(prob, opt, 4, replacement=False),
                so.optimizers.NoisyOptax(prob, opt, 4, so.MinibatchNoise(), dt=0.05)):
        ens = so.simulate(dyn, jnp.zeros(3), key=jr.key(2), n_paths=64, n_steps=40, save_every=40)
        assert ens.n_diverged == 0
        assert float(jnp.std(ens.final[:, 0])) > 0  # the paths differ: the noise is there
        assert float(prob.loss(ens.final.mean(0))) < float(prob.loss(jnp.zeros(3)))


# ------------------------------------------------------------------ formulas and plumbing


def test_rmsprop_sde_and_adam_sde_coefficients():
    prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 2.0])))
    noise = so.DiagonalNoise(jnp.array([4.0, 9.0]))
    lr = 0.1
    m = so.optimizers.RMSpropSDE(prob, lr, 2, noise, decay=0.99, eps=0.0, initial_scale=1.0)
    y = jnp.array([1.0, 1.0, 4.0, 16.0])  # θ = (1, 1), v = (4, 16)
    g = np.array([1.0, 2.0])
    np.testing.assert_allclose(m.drift(0.0, y), np.concatenate([-g / (lr * np.array([2.0, 4.0])),
                                                                 (0.01 / lr**2) * (np.array([2.0, 4.5]) - [4, 16])]))
    z = jnp.array([1.0, -1.0])
    np.testing.assert_allclose(m.diffusion_apply(0.0, y, z), [np.sqrt(2.0) / 2, -np.sqrt(4.5) / 4, 0, 0])
    glob = so.optimizers.RMSpropSDE(prob, lr, 2, noise, decay=0.99, eps=0.0, per_coordinate=False)
    yg = jnp.array([1.0, 1.0, 9.0])
    np.testing.assert_allclose(glob.drift(0.0, yg)[2], (0.01 / lr**2) * (6.5 - 9.0))
    a = so.optimizers.AdamSDE(prob, lr, 2, noise, b1=0.9, b2=0.99, eps=0.0)
    y3 = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    out = np.asarray(a.drift(0.0, y3))  # t = 0: m̂ = ∇L, v̂ = diag Σ_B
    np.testing.assert_allclose(out[:2], -g / (lr * np.sqrt([2.0, 4.5])))
    np.testing.assert_allclose(a.diffusion_apply(0.0, y3, z)[2:4], -(0.1 / lr**2) * lr * np.array([np.sqrt(2.0),
                                                                                                -np.sqrt(4.5)]))


def test_discrete_counterparts_and_time_units():
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
    hb = so.optimizers.HeavyBall(prob, 0.04, 0.9)
    assert float(hb.natural_dt()) == pytest.approx(0.2) and float(hb.friction) == pytest.approx(0.5)
    assert isinstance(hb.discrete(), so.OptaxDynamics) and hb.discrete().batch_size is None
    sde = so.optimizers.RMSpropSDE(prob, 0.1, 4, so.MinibatchNoise())
    assert float(sde.natural_dt()) == pytest.approx(0.01)
    assert isinstance(sde.discrete(), so.optimizers.NoisyOptax)
    real = sde.discrete(minibatch=True)
    assert isinstance(real, so.OptaxDynamics) and real.batch_size == 4 and float(real.natural_dt()) == pytest.approx(0.01)
    assert float(so.optimizers.AdaGradFlow(prob, 0.1).natural_dt()) == pytest.approx(0.01)


def test_bad_inputs_raise_value_errors_that_name_the_fix():
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2)
    with pytest.raises(ValueError, match="momentum"):
        so.optimizers.HeavyBall(prob, 0.01, 1.0)
    with pytest.raises(ValueError, match="noise="):
        so.optimizers.RMSpropSDE(prob, 0.1, 4, None)
    with pytest.raises(ValueError, match="batch_size"):
        so.optimizers.AdamSDE(prob, 0.1, 64, so.MinibatchNoise())
    with pytest.raises(ValueError, match="lr"):
        so.optimizers.AdamFlow(prob, -1.0)
    model = so.optimizers.RMSpropSDE(prob, 0.1, 4, so.MinibatchNoise(), initial_scale=1.0)
    with pytest.raises(ValueError, match="cannot be coupled"):
        so.optimizers.coupled_paths(so.OptaxDynamics(prob, optax.sgd(0.1), 4, lr=0.01), model, jnp.zeros(2), key=jr.key(0),
                         n_paths=2, n_steps=2)
    with pytest.raises(ValueError, match="same hyperparameters"):
        so.optimizers.coupled_paths(model.discrete(), so.optimizers.RMSpropSDE(prob, 0.2, 4, so.MinibatchNoise()), jnp.zeros(2),
                         key=jr.key(0), n_paths=2, n_steps=2)
    with pytest.raises(ValueError, match="params"):
        opt = so.optimizers.nesterov_sbc(0.1)
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))
