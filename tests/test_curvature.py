"""Curvature operators, Lanczos, Hutchinson / Hutch++ and SLQ against dense linear algebra (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from curvature_helpers import count_compiles, dense_hessian
from conftest import landscape_table

import sde_opt as so
from sde_opt.problems import mlp_apply


def random_quadratic(d=200, seed=0):
    """½θᵀHθ with an indefinite H whose spectrum has a few outliers and a clustered bulk."""
    k1, k2 = jr.split(jr.key(seed))
    q, _ = jnp.linalg.qr(jr.normal(k1, (d, d)))
    lam = jnp.concatenate([jnp.array([40.0, 25.0, 18.0, 12.0, 9.0]), jr.normal(k2, (d - 10,)), -jnp.arange(1.0, 6.0)])
    h = (q * lam) @ q.T
    return so.landscapes.quadratic(0.5 * (h + h.T)), np.asarray(0.5 * (h + h.T))


@pytest.fixture(scope="module")
def quad():
    return random_quadratic()


@pytest.fixture(scope="module")
def mlp():
    """A tanh MLP on digits with 160 parameters (small enough for a dense Hessian)."""
    prob = so.problems.mlp_digits(key=jr.key(3), hidden=(2,), n_examples=48)
    return prob, np.asarray(dense_hessian(prob, prob.theta0))


def check_eigs(vals, vecs, h, which, k, rtol=1e-6):
    ref_vals, ref_vecs = np.linalg.eigh(h)
    order = slice(None, None, -1) if which == "largest" else slice(None)
    ref_vals, ref_vecs = ref_vals[order][:k], ref_vecs[:, order][:, :k]
    np.testing.assert_allclose(vals, ref_vals, rtol=rtol, atol=rtol * np.abs(ref_vals).max() * 1e-3)
    vecs = np.asarray(vecs)
    np.testing.assert_allclose(vecs @ vecs.T, np.eye(k), atol=1e-8)
    # each Ritz vector is an eigenvector: residual small against the spectral norm
    resid = np.linalg.norm(h @ vecs.T - vecs.T * np.asarray(vals), axis=0)
    assert resid.max() < 1e-6 * np.abs(ref_vals).max()
    np.testing.assert_allclose(np.abs(np.sum(vecs * ref_vecs.T, axis=1)), 1.0, atol=1e-6)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_matches_eigh_on_200_parameters(quad, which, getkey):
    prob, h = quad
    vals, vecs = so.hessian_eigs(prob, jnp.zeros(200), 5, key=getkey(), which=which)
    check_eigs(vals, vecs, h, which, 5)
    assert vals[0] < 0 if which == "smallest" else vals[0] == pytest.approx(40.0, rel=1e-10)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_matches_eigh_on_an_mlp(mlp, which, getkey):
    prob, h = mlp
    vals, vecs = so.hessian_eigs(prob, prob.theta0, 5, key=getkey(), which=which)
    check_eigs(vals, vecs, h, which, 5)


def test_lanczos_full_spectrum_of_landscapes_at_minima_and_saddles(getkey):
    """k = d gives the whole spectrum (Lanczos exhausts the space); saddles have λ < 0."""
    table = dict(landscape_table())
    for name in ("double_well_3d",):
        prob = table[name]
        pts = jnp.concatenate([prob.info["minima"], prob.info["saddles"]])
        hs = np.concatenate([prob.info["hessians_min"], prob.info["hessians_saddle"]])
        d = pts.shape[1]
        vals = jax.vmap(lambda p: so.hessian_eigs(prob, p, d, key=jr.key(0), which="smallest")[0])(pts)
        np.testing.assert_allclose(vals, np.linalg.eigvalsh(hs), rtol=1e-8, atol=1e-10)
        assert np.all(np.asarray(vals)[-1, 0] < 0)  # negative curvature at the saddle


def test_repeated_eigenvalues_restart_and_stay_orthonormal(getkey):
    lam = jnp.array([3.0, 3.0, 3.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    res = so.curvature.eigs(so.curvature.MatrixOperator(jnp.diag(lam)), 5, key=getkey())
    np.testing.assert_allclose(res.values, [3, 3, 3, 1, 1], rtol=1e-12)
    np.testing.assert_allclose(res.vectors @ res.vectors.T, np.eye(5), atol=1e-10)
    assert bool(res.converged)


def test_warm_start_needs_fewer_steps(getkey):
    """On a spectrum without outliers (a random symmetric matrix, semicircle law) a cold start
    needs many more than the minimum 20 steps; a warm start from its answer needs fewer."""
    a = jr.normal(jr.key(0), (200, 200), jnp.float64)
    op = so.curvature.MatrixOperator(0.5 * (a + a.T))
    cold = so.curvature.eigs(op, 5, key=getkey())
    warm = so.curvature.eigs(op, 5, key=getkey(), v0=cold.vectors)
    assert int(warm.n_iter) < int(cold.n_iter)
    np.testing.assert_allclose(warm.values, cold.values, rtol=1e-10)


def test_warm_start_on_the_second_eigenvector_still_finds_the_first():
    """λ₁ = 1 and λ₂ = 0.97 (d = 200); a warm start on λ₂'s eigenvector (what tracking hands
    over after two eigenvalues cross) holds little of the first. With a loose tolerance a run
    allowed to stop from step k + 2 returned 0.97 for 100 of 100 keys; Lanczos must run its
    minimum of 20 steps and find 1."""
    d = 200
    lam = np.concatenate([[1.0, 0.97], np.linspace(-0.5, 0.5, d - 2)])
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))
    op = so.curvature.MatrixOperator((q * lam) @ q.T)
    for seed in range(20):
        res = so.curvature.eigs(op, 1, key=jr.key(seed), v0=q[:, 1], tol=1e-3)
        assert abs(float(res.values[0]) - 1.0) < 1e-3, (seed, float(res.values[0]))
        assert int(res.n_iter) >= 20


def test_fixed_step_lanczos_matches_eigh_on_a_dense_matrix(getkey):
    """The fixed-step mode runs exactly max_iter steps with no test: with the full Krylov
    space (max_iter = d) its Ritz values are the eigenvalues; with fewer steps on a spectrum
    with a gap it still gets the top ones to float64 precision, and its residuals say so."""
    d = 60
    lam = np.concatenate([[10.0, 8.0, 6.0], np.linspace(-1.0, 1.0, d - 3)])
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(d, d)))
    m = (q * lam) @ q.T
    want, vecs = np.linalg.eigh(m)
    op = so.curvature.MatrixOperator(jnp.asarray(m))
    full = so.curvature.eigs(op, 5, key=getkey(), max_iter=d, fixed_steps=True)
    assert int(full.n_iter) == d and bool(full.converged)
    np.testing.assert_allclose(full.values, want[::-1][:5], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(full.vectors * vecs[:, ::-1][:, :5].T, axis=1)), 1.0, atol=1e-10)
    for which, ref in (("largest", want[::-1][:3]), ("smallest", want[:1])):
        short = so.curvature.eigs(op, len(ref), key=getkey(), max_iter=40, fixed_steps=True, which=which)
        assert int(short.n_iter) == 40
        np.testing.assert_allclose(short.values, ref, rtol=1e-10, atol=1e-10)
    # the converged mode stops as soon as the residual test passes (here before 40 steps)
    conv = so.curvature.eigs(op, 3, key=getkey(), max_iter=40)
    np.testing.assert_allclose(conv.values, want[::-1][:3], rtol=1e-8)
    assert int(conv.n_iter) < 40
    # jittable with the operator and key traced, no recompilation across keys
    f = jax.jit(lambda o, k: so.curvature.eigs(o, 1, key=k, max_iter=30, fixed_steps=True).values)
    np.testing.assert_allclose(f(op, jr.key(3)), want[-1:], rtol=1e-10)


def test_history_is_the_run_of_every_length(getkey):
    """``EigResult.history()`` row j−1 is what a j-step run from the same start returns (the
    same Krylov space), its last row is ``values``, and the top Ritz value only grows toward
    λ₁ (Cauchy interlacing)."""
    d = 50
    lam = np.concatenate([[9.0, 7.0, 5.5], np.linspace(-2.0, 2.0, d - 3)])
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(d, d)))
    op = so.curvature.MatrixOperator(jnp.asarray((q * lam) @ q.T))
    key = getkey()
    for which, ref in (("largest", [9.0, 7.0]), ("smallest", [-2.0, -2.0 + 4.0 / (d - 4)])):
        res = so.curvature.eigs(op, 2, key=key, which=which, max_iter=30, fixed_steps=True)
        hist = res.history()
        assert hist.shape == (30, 2) and np.isnan(hist[0, 1]) and not np.isnan(hist[1, 1])
        np.testing.assert_allclose(hist[-1], res.values, rtol=1e-10)
        np.testing.assert_allclose(hist[-1], ref, rtol=1e-4)  # the bottom end is clustered
        for j in (2, 5, 11):
            short = so.curvature.eigs(op, 2, key=key, which=which, max_iter=j, fixed_steps=True)
            np.testing.assert_allclose(hist[j - 1], short.values, rtol=1e-10)
        top = hist[:, 0] if which == "largest" else -hist[:, 0]
        assert np.all(np.diff(top) >= -1e-12)
    conv = so.curvature.eigs(op, 1, key=key)  # a converged run: history as long as the run
    assert conv.history().shape == (int(conv.n_iter), 1)


def test_min_iter_lets_a_loose_tolerance_stop_early(getkey):
    """By default the residual test cannot stop a run before 20 steps; ``min_iter=1`` lets a
    loose ``tol`` end it as soon as it passes, and the Ritz value is then within the
    residual bound ``r²/gap`` of λ₁ (the top eigenvalue well separated here)."""
    d = 80
    lam = np.concatenate([[10.0], np.linspace(-1.0, 4.0, d - 1)])
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(d, d)))
    op = so.curvature.MatrixOperator(jnp.asarray((q * lam) @ q.T))
    key = getkey()
    default = so.curvature.eigs(op, 1, key=key, tol=1e-4)
    early = so.curvature.eigs(op, 1, key=key, tol=1e-4, min_iter=1)
    assert int(default.n_iter) >= 20 and bool(default.converged)
    assert int(early.n_iter) < 20 and bool(early.converged)
    r = float(early.residuals[0])
    assert r <= 1e-4 * 10.0
    assert abs(float(early.values[0]) - 10.0) <= r**2 / (10.0 - 4.0) + 1e-12
    vals, _ = so.hessian_eigs(so.landscapes.quadratic(jnp.asarray((q * lam) @ q.T)), jnp.zeros(d), 1, key=key,
                              tol=1e-4, min_iter=1)
    np.testing.assert_allclose(vals, early.values, rtol=1e-12)
    with pytest.raises(ValueError, match="min_iter"):
        so.curvature.eigs(op, 1, key=key, min_iter=0)


def test_subsampled_estimates_are_unbiased_with_the_sampling_spread(getkey):
    """On subsets of n of the N examples the subset loss L_S is unbiased for L with variance
    σ²/n · (N − n)/(N − 1) (σ²: the per-example losses' population variance; sampling
    without replacement), and the subset Hessian's trace is unbiased for Tr H: the mean
    within 4 of its standard errors, the spread across 300 subsets within 25% of the
    closed form (the sample variance of 300 draws has a relative spread of 8%)."""
    prob = so.problems.linear_regression(key=getkey(), n_examples=60, dim=3)
    th = prob.info["minima"][0] + 0.3
    n, big_n, reps = 12, 60, 300
    losses = np.asarray(prob.per_example_losses(th))
    est = so.curvature.subsampled(lambda p, t, k: p.loss(t), prob, th, key=getkey(), subset_size=n, n_subsets=reps)
    assert est.values.shape == (reps,) and est.subset_size == n and est.n_examples == big_n
    assert abs(float(est.mean) - losses.mean()) <= 4 * float(est.stderr)
    var_exact = losses.var() / n * (big_n - n) / (big_n - 1)
    assert abs(float(est.stderr) ** 2 * reps / var_exact - 1) < 0.25
    tr = so.curvature.subsampled(lambda p, t, k: jnp.trace(p.hessian(t)), prob, th, key=getkey(), subset_size=n,
                                 n_subsets=reps)
    assert abs(float(tr.mean) - float(jnp.trace(prob.info["hessians_min"][0]))) <= 4 * float(tr.stderr)
    with pytest.raises(ValueError, match="n_subsets"):
        so.curvature.subsampled(lambda p, t, k: p.loss(t), prob, th, key=getkey(), subset_size=n, n_subsets=1)
    with pytest.raises(ValueError, match="n must be an integer"):
        so.curvature.subsampled(lambda p, t, k: p.loss(t), prob, th, key=getkey(), subset_size=61)


def trace_zscores(prob, p, exact, estimator, n_seeds=24, n_probes=60):
    keys = jr.split(jr.key(7), n_seeds)
    tr = jax.vmap(lambda k: so.hessian_trace(prob, p, key=k, n_probes=n_probes, estimator=estimator))(keys)
    return (np.asarray(tr.value) - exact) / np.asarray(tr.stderr), tr


@pytest.mark.parametrize("estimator", [so.curvature.Hutchinson(), so.curvature.HutchPlusPlus()], ids=["hutchinson", "hutch++"])
def test_trace_within_three_standard_errors_across_seeds(mlp, estimator):
    prob, h = mlp
    exact = np.trace(h)
    z, tr = trace_zscores(prob, prob.theta0, exact, estimator)
    # the stderr is itself estimated (Hutch++: from its last third of the probes), so z is
    # t-distributed: allow one seed in 24 past 3 standard errors, none past 4
    assert np.sum(np.abs(z) >= 3.0) <= 1 and np.all(np.abs(z) < 4.0), z
    assert abs(np.mean(z)) < 3.0 / np.sqrt(len(z))  # unbiased: the mean z-score is about N(0, 1/24)
    # calibrated, not only safe: an inflated stderr would pass the lines above. The spread of
    # 24 z-scores has a relative standard error of about 1/√48 ≈ 0.14; 0.6–1.45 is ±3 of them
    # (the benchmark compares estimators at equal standard error, so this must hold)
    assert 0.6 < np.std(z, ddof=1) < 1.45, np.std(z, ddof=1)
    assert tr.n_matvecs == 60


def test_hutchplusplus_beats_hutchinson_when_eigenvalues_dominate(quad, getkey):
    prob, h = quad
    key = getkey()
    se = [so.hessian_trace(prob, jnp.zeros(200), key=key, n_probes=60, estimator=e).stderr
          for e in (so.curvature.Hutchinson(), so.curvature.HutchPlusPlus())]
    assert se[1] < se[0] / 2


def test_slq_density_integrates_to_one_and_matches_moments(mlp, getkey):
    prob, h = mlp
    d = h.shape[0]
    dens = so.curvature.hessian_density(prob, prob.theta0, key=getkey(), n_probes=48, n_iter=20)
    np.testing.assert_allclose(np.sum(np.asarray(dens.weights), axis=1), 1.0, rtol=1e-10)
    t = dens.grid(4000)
    assert float(jnp.trapezoid(dens.density(t), t)) == pytest.approx(1.0, abs=1e-6)
    for k in (1, 2, 3, 4):
        exact = np.trace(np.linalg.matrix_power(h, k)) / d
        assert abs(float(dens.moment(k)) - exact) < 3 * float(dens.moment_stderr(k)) + 1e-12, k


def test_slq_quadrature_is_exact_with_a_full_krylov_space(getkey):
    """With n_iter = d every probe's nodes are the eigenvalues and its weights the squared
    projections of the probe: moments of the quadrature are then vᵀHᵏv exactly."""
    h = np.diag(np.arange(1.0, 13.0))
    dens = so.curvature.spectral_density(so.curvature.MatrixOperator(jnp.asarray(h)), key=getkey(), n_probes=3, n_iter=12)
    nodes = np.sort(np.asarray(dens.nodes), axis=1)
    np.testing.assert_allclose(nodes, np.tile(np.arange(1.0, 13.0), (3, 1)), atol=1e-9)
    # Rademacher probes / √d on a diagonal matrix: every weight is exactly 1/d
    np.testing.assert_allclose(dens.weights, 1 / 12, atol=1e-9)
    assert float(dens.moment(2)) == pytest.approx(np.mean(np.arange(1.0, 13.0) ** 2), rel=1e-12)


def test_parameter_groups_restrict_to_the_principal_block(mlp, getkey):
    prob, h = mlp
    groups = so.curvature.parameter_groups(prob)
    assert set(groups) >= {"", "0", "0/w", "0/b", "1", "1/w", "1/b"}
    start, size = groups["0/w"]
    block = h[start : start + size, start : start + size]
    vals, vecs = so.hessian_eigs(prob, prob.theta0, 3, key=getkey(), group="0/w")
    assert vecs.shape == (3, size)
    np.testing.assert_allclose(vals, np.linalg.eigvalsh(block)[::-1][:3], rtol=1e-8)
    v = jr.normal(getkey(), (size,))
    mv = jax.jit(lambda p, v: so.curvature.curvature_operator(prob, p, group=(0, "w")).mv(v))
    np.testing.assert_allclose(mv(prob.theta0, v), block @ v, atol=1e-12)
    layer = so.curvature.curvature_operator(prob, prob.theta0, group=1)
    assert layer.dim == groups["1"][1]


def test_gauss_newton_fisher_and_empirical_fisher_products(mlp, getkey):
    prob, _ = mlp
    p = prob.theta0
    model = lambda params, ex: mlp_apply(params, ex["x"])  # noqa: E731
    nll = lambda z, ex: -jax.nn.log_softmax(z)[ex["y"]]  # noqa: E731
    v = jr.normal(getkey(), p.shape)
    # dense references: J (N, C, d) of the logits, output Hessian diag(p) − ppᵀ
    jac = jax.vmap(jax.jacfwd(lambda th, ex: model(prob.unravel(th), ex)), in_axes=(None, 0))(p, prob.data)
    probs = jax.nn.softmax(jax.vmap(lambda ex: model(prob.unravel(p), ex))(prob.data))
    hz = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(probs)
    ggn = jnp.einsum("nci,ncd,ndj->ij", jac, hz, jac) / jac.shape[0]
    curvatures = [so.curvature.GaussNewton(model, nll), so.curvature.Fisher(model, "categorical"), so.curvature.EmpiricalFisher(),
                  so.curvature.Fisher(model, "gaussian")]
    products = jax.jit(lambda p, v: [so.curvature.curvature_operator(prob, p, curvature=c).mv(v) for c in curvatures])(p, v)
    g = eqx.filter_jit(lambda pr, p: pr.per_example_grads(p))(prob, p)
    expected = [ggn @ v, ggn @ v, g.T @ (g @ v) / g.shape[0], jnp.einsum("nci,ncj->ij", jac, jac) @ v / jac.shape[0]]
    for got, want in zip(products, expected):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_estimators_compile_once_under_jit_and_vmap(quad):
    """Second calls with new parameters and keys compile nothing, alone or under jit(vmap)."""
    _, h = quad
    h = jnp.asarray(h[:30, :30])
    prob = so.landscapes.quadratic(h)
    ps = jr.normal(jr.key(1), (3, 30))
    calls = {
        "eigs": lambda p, k: so.hessian_eigs(prob, p, 3, key=k)[0],
        "trace": lambda p, k: so.hessian_trace(prob, p, key=k, n_probes=8).value,
        "density": lambda p, k: so.curvature.hessian_density(prob, p, key=k, n_probes=2, n_iter=8).nodes,
    }
    for name, f in calls.items():
        f(ps[0], jr.key(0))
        with count_compiles() as c:
            f(ps[1], jr.key(1))
        assert c.n == 0, f"{name} recompiled on a second call: {c.names}"
        batched = jax.jit(jax.vmap(f))
        out = batched(ps, jr.split(jr.key(2), 3))
        ps2, keys2 = ps + 1.0, jr.split(jr.key(3), 3)
        with count_compiles() as c:
            out2 = batched(ps2, keys2)
        assert c.n == 0, f"{name} recompiled under jit(vmap): {c.names}"
        assert out.shape[0] == out2.shape[0] == 3
    vals = jax.vmap(calls["eigs"])(ps, jr.split(jr.key(4), 3))
    for v in vals:
        np.testing.assert_allclose(v, np.linalg.eigvalsh(np.asarray(h))[::-1][:3], rtol=1e-8)


def test_bad_input_raises_with_a_fix(mlp, getkey):
    prob, _ = mlp
    p = prob.theta0
    with pytest.raises(ValueError, match="does not exist.*pass one of"):
        so.hessian_eigs(prob, p, 2, key=getkey(), group="2/w")
    with pytest.raises(ValueError, match="k=1000 exceeds the dimension"):
        so.hessian_eigs(prob, p, 1000, key=getkey())
    with pytest.raises(ValueError, match="k=20 exceeds the dimension 10"):
        so.hessian_eigs(prob, p, 20, key=getkey(), group="1/b")
    with pytest.raises(ValueError, match="which must be"):
        so.hessian_eigs(prob, p, 2, key=getkey(), which="top")
    with pytest.raises(ValueError, match="must return a scalar.*reduce it"):
        so.hessian_eigs(so.Problem(lambda th: th**2), jnp.ones(3), 1, key=getkey())
    with pytest.raises(ValueError, match="params=pytree"):
        so.hessian_trace(so.Problem(lambda th: th @ th), jnp.ones(3), key=getkey(), n_probes=4, group="0")
    with pytest.raises(ValueError, match="n_probes >= 4"):
        so.hessian_trace(prob, p, key=getkey(), n_probes=3, estimator=so.curvature.HutchPlusPlus())
    with pytest.raises(ValueError, match="needs a finite-sum problem"):
        so.curvature.curvature_operator(so.Problem(lambda th: th @ th), jnp.ones(3), curvature=so.curvature.EmpiricalFisher())


def test_results_save_and_plot(mlp, getkey, tmp_path):
    prob, _ = mlp
    dens = so.curvature.hessian_density(prob, prob.theta0, key=getkey(), n_probes=48, n_iter=20)
    so.save(tmp_path / "dens", dens)
    back, _ = so.load(tmp_path / "dens")
    np.testing.assert_allclose(back.nodes, dens.nodes)
    assert float(back.moment(1)) == pytest.approx(float(dens.moment(1)))
    ax = so.plot.spectral_density(dens, outliers=dens.nodes.max(axis=1)[:2])
    assert ax.get_xlabel() == "eigenvalue"
