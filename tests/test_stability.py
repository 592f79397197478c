"""Stability of minima: the mean-square operator against brute-force expectations and closed
forms, the Monte Carlo divergence boundary of real SGD against the formula, and the
stability radius against the law of the running maximum of Brownian motion."""

import itertools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

import sde_opt as so
from sde_opt.experiments import RadiusStudyConfig, fit_exponent, radius_study, well_family
from sde_opt.stability import batch_factor, quantile_coverage, quantile_ranks


# ----------------------------------------------------------------------------- linear / mean-square
def test_gd_max_lr():
    assert so.stability.gd_max_lr(jnp.diag(jnp.array([1.0, 4.0]))) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="stable at every lr"):
        so.stability.gd_max_lr(-jnp.eye(2))


def _random_psd(key, n, d):
    a = jr.normal(key, (n, d, d))
    return jnp.einsum("nij,nkj->nik", a, a) / d


@pytest.mark.parametrize("replacement", [True, False])
def test_ms_operator_is_the_exact_expectation(getkey, replacement):
    """T(M) = E[(I − lr H_B) M (I − lr H_B)] by enumerating every batch."""
    n, d, b, lr = 4, 2, 2, 0.3
    hs = _random_psd(getkey(), n, d)
    m = _random_psd(getkey(), 1, d)[0]
    if replacement:
        batches = list(itertools.product(range(n), repeat=b))
    else:
        batches = list(itertools.combinations(range(n), b))
    exp = sum((jnp.eye(d) - lr * hs[np.array(bt)].mean(0)) @ m @ (jnp.eye(d) - lr * hs[np.array(bt)].mean(0))
              for bt in batches) / len(batches)
    t = so.stability.MeanSquareStability(hs).operator(lr, b, replacement)
    np.testing.assert_allclose((t @ m.reshape(-1)).reshape(d, d), exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("replacement", [True, False])
def test_ms_max_lr_commuting_closed_form(replacement):
    """Diagonal per-example Hessians: each mode is 1 − 2ηλ + η²(λ² + c s²), so
    lr* = min over modes of 2λ/(λ² + c s²)."""
    h = np.array([[1.0, 3.0], [2.0, 1.0], [3.0, 2.5], [6.0, 0.5], [0.5, 2.0]])  # (N, d) diagonals
    n = h.shape[0]
    hs = jnp.asarray(np.stack([np.diag(r) for r in h]))
    ms = so.stability.MeanSquareStability(hs)
    lam, s2 = h.mean(0), h.var(0)
    for b in (1, 2, 3, 5):
        c = batch_factor(n, b, replacement)
        want = np.min(2 * lam / (lam**2 + c * s2))
        assert ms.max_lr(b, replacement) == pytest.approx(want, rel=1e-12)
        assert ms.max_lr(b, replacement, method="bisection") == pytest.approx(want, rel=1e-10)
        assert ms.spectral_radius(want, b, replacement) == pytest.approx(1.0, abs=1e-12)
    assert ms.max_lr(n, replacement=False) == pytest.approx(ms.gd_max_lr, rel=1e-12)


def test_ms_region_monotone_and_bounded(getkey):
    ms = so.stability.MeanSquareStability(_random_psd(getkey(), 12, 3))
    for rep in (True, False):
        reg = ms.region(replacement=rep)
        lr = np.asarray(reg.max_lr)
        assert np.all(np.diff(lr) >= -1e-12) and np.all(lr <= reg.gd_max_lr * (1 + 1e-12))
        np.testing.assert_allclose(lr, [ms.max_lr(int(b), rep, method="bisection") for b in reg.batch_sizes],
                                   rtol=1e-9)
    # without replacement is never less stable than with it
    assert np.all(np.asarray(ms.region(replacement=False).max_lr) >= np.asarray(ms.region().max_lr) - 1e-12)


def test_ms_from_problem_and_errors():
    prob = so.problems.linear_regression(key=jr.key(0), n_examples=10, dim=2)
    th = prob.info["minima"][0]
    hs = so.stability.per_example_hessians(prob, th)
    x = prob.data["x"]
    np.testing.assert_allclose(hs, jnp.einsum("ni,nj->nij", x, x), rtol=1e-12)
    ms = so.stability.MeanSquareStability.from_problem(prob, th)
    with pytest.raises(ValueError, match="batch_size=11 exceeds"):
        ms.max_lr(11)
    with pytest.raises(ValueError, match=r"\(N, d, d\)"):
        so.stability.MeanSquareStability(jnp.ones((3, 2)))


# ----------------------------------------------------------------------------- Monte Carlo boundary
@pytest.fixture(scope="module")
def regression():
    prob = so.problems.linear_regression(key=jr.key(3), n_examples=24, dim=3, noise_std=0.3)
    th = prob.info["minima"][0]
    return prob, th, so.stability.MeanSquareStability.from_problem(prob, th)


def test_growth_rate_is_log_spectral_radius(regression):
    """The cloning estimator of the growth of E‖e‖² against log ρ(T), within 4 standard errors."""
    prob, th, ms = regression
    for lr in (0.5 * ms.max_lr(2), 1.1 * ms.max_lr(2)):
        g = so.stability.moment_growth_rate(so.SGD(prob, lr, 2), th, key=jr.key(7), n_walkers=600, n_steps=200, burn_in=40)
        want = math.log(ms.spectral_radius(lr, 2))
        assert abs(g.rate - want) < 4 * g.stderr + 1e-3 * abs(want), (lr, g.rate, g.stderr, want)


@pytest.mark.parametrize("batch_size, replacement", [(1, True), (4, True), (4, False)])
def test_mc_divergence_boundary_matches_mean_square_formula(regression, batch_size, replacement):
    """Acceptance: the boundary of real SGD from Monte Carlo is within 2% in lr of the
    mean-square formula, and within 4 of its own standard errors."""
    prob, th, ms = regression
    want = ms.max_lr(batch_size, replacement)
    mc = so.stability.divergence_boundary(so.SGD(prob, 0.1, batch_size, replacement=replacement), th, key=jr.key(11),
                                n_walkers=600, n_steps=200, burn_in=40, n_bisect=8)
    se = (mc.high - mc.low) / (2 * 1.959964)
    assert abs(mc.lr / want - 1) < 0.02, (mc.lr, want)
    assert abs(mc.lr - want) < 4 * se + 1e-4 * want, (mc.lr, want, se)


def test_mc_boundary_nonquadratic_is_the_linearisation(getkey):
    """A finite sum of shifted double wells (not quadratic): the real optimizer's tangent
    dynamics at the minimum has the mean-square boundary of the per-example Hessians."""
    base = so.landscapes.double_well(barrier=0.5, curvature=2.0, dim=2, transverse=[1.0])
    prob = so.landscapes.perturbed_sum(base, n_examples=16, shift_std=0.3, key=getkey())
    th = base.info["minima"][1]
    newton = jax.jit(lambda th: th - jnp.linalg.solve(prob.hessian(th), prob.grad(th)))
    for _ in range(30):  # Newton to the minimum of the sum
        th = newton(th)
    ms = so.stability.MeanSquareStability.from_problem(prob, th)
    want = ms.max_lr(1)
    assert want < 0.97 * ms.gd_max_lr  # the per-example curvatures differ: SGD is less stable than GD
    mc = so.stability.divergence_boundary(so.SGD(prob, 0.1, 1), th, key=getkey(), n_walkers=400, n_steps=150, burn_in=30,
                                n_bisect=7)
    se = (mc.high - mc.low) / (2 * 1.959964)
    assert abs(mc.lr / want - 1) < 0.02 and abs(mc.lr - want) < 4 * se + 1e-4 * want, (mc.lr, want, se)


def test_growth_rate_errors(regression):
    prob, th, _ = regression
    with pytest.raises(ValueError, match="burn_in"):
        so.stability.moment_growth_rate(so.SGD(prob, 0.1, 1), th, key=jr.key(0), n_steps=10, burn_in=10)
    opt = so.OptaxDynamics(prob, __import__("optax").sgd(0.1, momentum=0.9), 1)
    with pytest.raises(ValueError, match="carries optimizer state"):
        so.stability.moment_growth_rate(opt, th, key=jr.key(0), n_steps=10, burn_in=0)


# ----------------------------------------------------------------------------- order statistics
@pytest.mark.parametrize("n, p", [(20, 0.5), (100, 0.9), (1000, 0.99), (50, 0.02)])
def test_quantile_ranks_coverage(n, p):
    k, r, s = quantile_ranks(n, p, 0.95)
    assert k == math.ceil(n * p)
    cov = quantile_coverage(n, p, 0.95)
    assert cov >= 0.95
    # tightest equal-tailed choice: moving either end inwards drops a tail below α/2
    if r >= 1:
        assert stats.binom.cdf(r - 1, n, p) <= 0.025 < stats.binom.cdf(r, n, p)
    if s <= n:
        assert stats.binom.sf(s - 1, n, p) <= 0.025 < stats.binom.sf(s - 2, n, p)


# ----------------------------------------------------------------------------- the stability radius
LR, N_STEPS, N_REP, N_PER = 0.04, 100, 300, 100  # horizon T = 4, σ = 1, 30,000 paths


def _brownian(lr=LR):
    flat = so.Problem(lambda th: 0.0 * jnp.sum(th), info={"dim": 1})
    return so.SGDSDE(flat, lr, 1, so.IsotropicNoise(1.0 / lr))  # diffusion² = lr/B · variance = 1


@pytest.fixture(scope="module")
def brownian_radius():
    return so.stability_radius(_brownian(), jnp.zeros(1), key=jr.key(2024), delta=0.1, n_steps=N_STEPS,
                               n_paths=N_REP * N_PER, save_every=N_STEPS // 2)


def test_radius_of_brownian_motion_matches_the_reflection_law(brownian_radius):
    """Acceptance: r(δ) of |W| on [0, T] (grid every dt) against the two-sided series law with
    the Broadie–Glasserman–Kou shift, within 3.5 standard errors, at several δ and horizons."""
    rad = brownian_radius
    for ti, t in enumerate(np.asarray(rad.ts)):
        curve = rad.curve([0.5, 0.25, 0.1, 0.02], time_index=ti)
        for d, r in zip(np.asarray(curve.delta), np.asarray(curve.radius)):
            want = so.theory.brownian_max_quantile(1 - d, t, dt=LR)
            se = math.sqrt(d * (1 - d) / rad.n_paths) / so.theory.brownian_max_pdf(want, t, dt=LR)
            assert abs(r - want) < 3.5 * se, (t, d, r, want, se)
    # the whole law: Kolmogorov–Smirnov distance below its 1% critical value
    x = np.sort(np.asarray(rad.max_excursion))
    f = so.theory.brownian_max_cdf(x, float(rad.ts[-1]), dt=LR)
    n = x.size
    ks = max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n), ks
    # without the discrete-monitoring correction the law is visibly off
    f0 = so.theory.brownian_max_cdf(x, float(rad.ts[-1]))
    assert np.max(np.abs(np.arange(1, n + 1) / n - f0)) > 3 * 1.63 / math.sqrt(n)


def test_radius_interval_has_nominal_coverage(brownian_radius):
    """Acceptance: split into 300 independent runs of 100 paths; the order-statistics
    interval covers the true quantile as often as its exact binomial coverage says."""
    x = np.asarray(brownian_radius.max_excursion).reshape(N_REP, N_PER)
    t = float(brownian_radius.ts[-1])
    for delta in (0.1, 0.5):
        want = so.theory.brownian_max_quantile(1 - delta, t, dt=LR)
        hits = 0
        for row in x:
            _, lo, hi = so.stability.quantile_interval(row, 1 - delta, 0.95)
            hits += lo <= want <= hi
        nominal = quantile_coverage(N_PER, 1 - delta, 0.95)
        se = math.sqrt(nominal * (1 - nominal) / N_REP)
        assert abs(hits / N_REP - nominal) < 3 * se, (delta, hits / N_REP, nominal)


def test_one_sided_maximum():
    """With norm = e[0] the radius is the quantile of max W: 2Φ(r/√t) − 1, shifted by BGK."""
    rad = so.stability_radius(_brownian(), jnp.zeros(1), key=jr.key(5), delta=0.2, n_steps=N_STEPS, n_paths=8000,
                              norm=lambda e: e[0])
    t = float(rad.ts[-1])
    want = so.theory.brownian_max_quantile(0.8, t, two_sided=False, dt=LR)
    assert want == pytest.approx(stats.norm.ppf(0.9) * 2.0 - 0.5825971579390106 * 0.2, rel=1e-9)
    se = math.sqrt(0.16 / 8000) / so.theory.brownian_max_pdf(want, t, two_sided=False, dt=LR)
    assert abs(rad.radius - want) < 3.5 * se


def test_brownian_law_series_agree():
    r = np.linspace(0.3, 4.0, 40)
    f = so.theory.brownian_max_cdf(r, 1.0)
    assert float(so.theory.brownian_max_cdf(1.0, 1.0)) == pytest.approx(0.370777, abs=1e-5)
    # the two series agree where both converge (u = t/r² around the switch at 1/2)
    from scipy import stats as st

    for rr in (1.2, 1.4, 1.6):
        k = np.arange(-30, 31)
        img = np.sum((-1.0) ** np.abs(k) * (st.norm.cdf((2 * k + 1) * rr) - st.norm.cdf((2 * k - 1) * rr)))
        ks = np.arange(60)
        eig = 4 / np.pi * np.sum((-1.0) ** ks / (2 * ks + 1) * np.exp(-((2 * ks + 1) ** 2) * np.pi**2 / (8 * rr**2)))
        assert img == pytest.approx(eig, abs=1e-12)
    assert np.all(np.diff(f) > 0)


@pytest.mark.parametrize("kind", ["sde", "noisy_gd", "sgd"])
def test_radius_paths_are_the_engine_paths(kind):
    prob = well_family("fixed_barrier", 3.0, noise_var=2.0, n_examples=8)
    noise = so.ConstantNoise(jnp.array([[2.0]]))
    dyn = {"sde": so.SGDSDE(prob, 0.1, 2, noise), "noisy_gd": so.NoisyGD(prob, 0.1, 2, noise),
           "sgd": so.SGD(prob, 0.1, 2)}[kind]
    key = jr.key(9)
    ens = so.simulate(dyn, jnp.zeros(1), key=key, n_paths=12, n_steps=40)
    want = jax.lax.cummax(jnp.abs(ens.ys[:, 1:, 0]), axis=1)[:, 9::10]
    ts, runs = so.max_excursion(dyn, jnp.zeros(1), key=key, n_paths=12, n_steps=40, save_every=10,
                                chunk_size=5)
    np.testing.assert_allclose(runs, want, rtol=1e-12)
    np.testing.assert_allclose(ts, ens.ts[10::10], rtol=1e-12)


def test_radius_counts_diverged_paths_as_infinite():
    prob = so.landscapes.perturbed_sum(so.landscapes.quadratic(jnp.eye(1) * 4.0), n_examples=8, key=jr.key(0))
    rad = so.stability_radius(so.SGD(prob, 1.0, 1), jnp.zeros(1), key=jr.key(1), delta=0.1, n_steps=1000,
                              n_paths=50)
    assert rad.n_diverged == 50 and math.isinf(rad.radius)
    assert rad.inside_probability(1e6)[0] == 0.0


def test_radius_curve_band_and_save_roundtrip(tmp_path):
    prob = so.landscapes.quadratic(jnp.eye(2))
    dyn = so.SGDSDE(prob, 0.1, 1, so.HessianNoise())
    rad = so.stability_radius(dyn, jnp.zeros(2), key=jr.key(0), delta=0.1, n_steps=50, n_paths=500)
    c = rad.curve([0.1])
    assert float(c.radius[0]) == rad.radius and float(c.low[0]) == rad.low and float(c.high[0]) == rad.high
    band = rad.curve([0.3, 0.1], simultaneous=True)
    point = rad.curve([0.3, 0.1])
    assert np.all(band.low <= point.low) and np.all(band.high >= point.high)
    p, lo, hi = rad.inside_probability(rad.radius * 1.0000001)
    assert lo <= p <= hi and p >= 0.9
    so.save(tmp_path / "rad", rad)
    back, meta = so.load(tmp_path / "rad")
    assert back.radius == rad.radius and back.curve([0.1]).radius[0] == c.radius[0]
    with pytest.raises(ValueError, match="delta must be in"):
        so.stability_radius(dyn, jnp.zeros(2), key=jr.key(0), delta=1.0, n_steps=5, n_paths=5)
    with pytest.raises(ValueError, match="SGD is a discrete algorithm"):
        sgd = so.SGD(so.landscapes.perturbed_sum(prob, key=jr.key(0)), 0.1, 1)
        so.stability_radius(sgd, jnp.zeros(2), key=jr.key(0), delta=0.1, n_steps=5, n_paths=5, dt=0.01)


# ----------------------------------------------------------------------------- the radius study
def test_fit_exponent_recovers_a_power_law():
    k = np.geomspace(1, 20, 8)
    r = 2.0 * k**-0.5
    fit = fit_exponent(k, r, r * 0.98, r * 1.02)
    assert fit.exponent == pytest.approx(-0.5, abs=1e-12) and fit.low < -0.5 < fit.high
    np.testing.assert_allclose(fit.local, -0.5, atol=1e-12)


def test_radius_study_smoke_and_ou_scaling():
    """The quadratic family with isotropic noise follows the OU scale √(lr σ²/(2Bκ)):
    the local exponent is near −1/2 (a little above, from the maximum over κT relaxation
    times), far from the claimed −1."""
    cfg = RadiusStudyConfig(kappas=(1.0, 3.0, 9.0), families=("quadratic",), noises=("isotropic",),
                            dynamics=("sde",), n_paths=600, substeps=4, horizon=5.0)
    out = radius_study(cfg, key=jr.key(0))
    fit = out.setting("quadratic", "isotropic", "sde").fit
    p, lo, hi = fit.exponent, fit.low, fit.high
    assert -0.6 < p < -0.3 and hi < -0.2, (p, lo, hi)
    assert "quadratic/isotropic/sde" in out.table()
    assert (fit.kappa_min, fit.kappa_max) == (1.0, 9.0)


def test_radius_study_round_trip(tmp_path):
    from result_helpers import round_trip

    cfg = RadiusStudyConfig(kappas=(1.0, 3.0, 9.0, 25.0), families=("fixed_barrier",), noises=("hessian",),
                            dynamics=("sgd",), n_paths=50, horizon=1.0)
    out = radius_study(cfg, key=jr.key(1))
    st = out.settings[0]
    assert np.isnan(st.radius[-1]) and st.fit is not None  # lr κ ≥ 2: unstable, stored as nan
    loaded = round_trip(tmp_path, out, "radius")
    assert loaded.table() == out.table() and loaded.config == cfg
