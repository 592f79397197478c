"""A Flax linen CNN with BatchNorm and an Equinox MLP through every analysis, each result
checked against dense ground truth in float64.

The references are written without the library: the Hessian by ``jax.hessian`` of the mean
loss and the noise covariance ``D = (1/N) Σ gᵢgᵢᵀ − ḡḡᵀ`` from ``vmap(grad)`` of the
per-example losses, on flat parameters raveled by flax / equinox themselves; the mini-batch
steps by ``jax.grad`` of the training-mode batch loss (BatchNorm with the batch's own
statistics). Both networks have d ≈ 120 parameters and N = 16 examples, so every dense
reference is cheap.

Tolerances: quantities that are exact up to rounding (eigenvalues of converged Lanczos,
traces, moments, engine paths rebuilt from the documented key scheme) to ~1e-9 relative;
eigenvectors as ``1 − |cos| < 1e-6`` where the eigenvalue is apart from the rest of the
spectrum by more than ``GAP`` of the spectral norm (checked when the point is built: then a
Lanczos residual ``≤ √eps‖M‖`` bounds ``1 − |cos|`` by ~1e-10); stochastic estimators
within ``Z_SE`` of their own standard errors, with fixed keys.
"""

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import mean_and_se

import sde_opt as so

# every entry point compiles its own kernels for each network (about 2-8 s each on this 2-core
# CPU): the file takes minutes, not seconds. It still runs in CI.
pytestmark = pytest.mark.slow

N = 16  # examples
LR, BATCH = 0.1, 5  # the SGD / optax / tracking runs (batches with replacement)
OPT = optax.sgd(LR)  # optax optimizers are closures: one value, one compilation
N_STEPS, EVERY = 4, 2  # tracking records after 0, 2 and 4 steps
SDE_LR, SDE_BATCH = 0.1, 4
SDE_PATHS, SDE_STEPS = 200, 6
Z_SE = 4.0  # statistical tolerance, in standard errors
GAP = 1e-3  # eigenvectors are compared where their eigenvalue is apart from the rest by > GAP · ‖M‖₂


# ----------------------------------------------------------------------------- models
def _xent(logits, y):
    return -jax.nn.log_softmax(logits)[y]


def _flax_cnn():
    """6×6×1 images -> Conv(3 maps, 3×3, SAME) -> BatchNorm -> tanh -> 2×2 average pool
    -> Dense(3 classes); softmax cross-entropy. d = 30 + 6 + 84 = 120."""
    nn = pytest.importorskip("flax.linen")

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(3, (3, 3), padding="SAME")(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.avg_pool(jnp.tanh(x), (2, 2), strides=(2, 2))
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    net = CNN()
    kx, ky, ki = jr.split(jr.key(10), 3)
    data = {"x": jr.normal(kx, (N, 6, 6, 1)), "y": jr.randint(ky, (N,), 0, 3)}
    variables = net.init(ki, data["x"][:2])
    stats = jax.tree_util.tree_map(lambda a: a + 0.5, variables["batch_stats"])  # non-trivial running statistics
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),  # flax initialises in float32
                                       {"params": variables["params"], "batch_stats": stats})
    loss = lambda var, ex: _xent(net.apply(var, ex["x"][None])[0], ex["y"])  # noqa: E731

    def batch_loss(var, batch):  # training mode: the batch's statistics, updates discarded
        out, _ = net.apply(var, batch["x"], train=True, mutable=["batch_stats"])
        return jnp.mean(jax.vmap(_xent)(out, batch["y"]))

    prob = so.Problem(loss, data, params=variables, batch_loss_fn=batch_loss)
    flat, unravel = jfu.ravel_pytree(variables["params"])
    var = lambda th: {"params": unravel(th), "batch_stats": variables["batch_stats"]}  # noqa: E731
    return prob, flat, lambda th, ex: loss(var(th), ex), lambda th, batch: batch_loss(var(th), batch), 0.5


def _equinox_mlp():
    """4 -> 8 -> 8 -> 2, tanh, squared error. d = 40 + 72 + 18 = 130."""
    model = eqx.nn.MLP(4, 2, 8, 2, activation=jax.nn.tanh, key=jr.key(20))
    kx, ky = jr.split(jr.key(21))
    data = {"x": jr.normal(kx, (N, 4)), "y": jr.normal(ky, (N, 2))}
    loss = lambda m, ex: 0.5 * jnp.sum((m(ex["x"]) - ex["y"]) ** 2)  # noqa: E731
    prob = so.Problem(loss, data, params=model)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jfu.ravel_pytree(params)

    def example_loss(th, ex):
        return loss(eqx.combine(unravel(th), static), ex)

    def batch_loss(th, batch):  # no BatchNorm: the mean of the examples' losses
        return jnp.mean(jax.vmap(example_loss, (None, 0))(th, batch))

    return prob, flat, example_loss, batch_loss, 0.1


@dataclasses.dataclass(frozen=True)
class Dense:
    """Dense ground truth at one point (numpy, float64)."""

    loss: float
    grad: np.ndarray  # ∇L (d,)
    hessian: np.ndarray  # (d, d)
    lam: np.ndarray  # eigenvalues of H, ascending
    u: np.ndarray  # their eigenvectors (columns)
    centred: np.ndarray  # Gc = G − ḡ (N, d)
    noise: np.ndarray  # D = GcᵀGc/N
    mu: np.ndarray  # eigenvalues of D, ascending
    v: np.ndarray


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    prob: so.Problem
    theta: jax.Array  # the point analysed (moved away from initialisation)
    example_loss: Callable  # fᵢ(θ, example), evaluation mode, on flax's / equinox's own ravel
    batch_loss: Callable  # training-mode mean loss of a batch
    reference: Callable  # θ -> (L, H, per-example gradients), jitted
    dense: Dense  # at theta

    @property
    def dim(self):
        return int(self.theta.shape[0])

    def at(self, theta) -> Dense:
        loss, h, g = (np.asarray(a) for a in self.reference(theta))
        h = 0.5 * (h + h.T)
        gbar = g.mean(axis=0)
        gc = g - gbar
        noise = gc.T @ gc / g.shape[0]
        lam, u = np.linalg.eigh(h)
        mu, v = np.linalg.eigh(noise)
        return Dense(float(loss), gbar, h, lam, u, gc, noise, mu, v)


def _gaps_ok(values, idx, scale):
    """Each eigenvalue ``values[i]``, i in idx, is apart from all others by > GAP·scale."""
    return all(np.min(np.abs(np.delete(values, i) - values[i])) > GAP * scale for i in idx)


@pytest.fixture(scope="module", params=["flax_cnn", "equinox_mlp"])
def case(request):
    prob, flat, example_loss, batch_loss, lr = {"flax_cnn": _flax_cnn, "equinox_mlp": _equinox_mlp}[request.param]()
    data = prob.data

    def full_loss(th):
        return jnp.mean(jax.vmap(example_loss, (None, 0))(th, data))

    @jax.jit
    def reference(th):
        return full_loss(th), jax.hessian(full_loss)(th), jax.vmap(jax.grad(example_loss), (None, 0))(th, data)

    # away from initialisation: a random kick, then 20 steps of full-batch GD
    theta = flat + 0.3 * jr.normal(jr.key(1), flat.shape)
    theta = jax.jit(lambda th: jax.lax.fori_loop(0, 20, lambda _, t: t - lr * jax.grad(full_loss)(t), th))(theta)
    c = Case(request.param, prob, theta, example_loss, batch_loss, reference, None)
    c = dataclasses.replace(c, dense=c.at(theta))
    dn = c.dense
    # the spectra are not degenerate where vectors are compared (else the test is void)
    h_norm, d_norm = np.max(np.abs(dn.lam)), dn.mu[-1]
    d = c.dim
    assert _gaps_ok(dn.lam, [d - 1, d - 2, d - 3, 0, 1], h_norm), dn.lam
    assert _gaps_ok(dn.mu, [d - 1, d - 2, d - 3], d_norm), dn.mu[-5:]
    assert dn.lam[0] < -0.02 * h_norm  # a non-convex point: "smallest" is not the zero cluster
    return c


def _close(a, b, rtol=1e-9, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _assert_vectors(rows, columns, tol=1e-6):
    """Unit rows equal to the given unit columns up to sign: ``1 − |cos| < tol``."""
    rows = np.asarray(rows)
    _close(np.linalg.norm(rows, axis=1), 1.0, 1e-10)
    cos = np.abs(np.sum(rows * columns.T, axis=1))
    np.testing.assert_array_less(1.0 - cos, tol)


def _within(est, se, exact, z=Z_SE):
    est, se = float(est), float(se)
    assert se > 0 and abs(est - exact) <= z * se, (est, se, exact)


# ----------------------------------------------------------------------------- curvature
@pytest.mark.filterwarnings("error:Lanczos did not reach:UserWarning")
def test_hessian_eigs_match_eigh(case):
    """Top-3 and bottom-2 eigenpairs by Lanczos (converged: a warning is an error) equal
    eigh of the dense Hessian: values to 1e-9·‖H‖, vectors to 1 − |cos| < 1e-6."""
    dn = case.dense
    scale = np.max(np.abs(dn.lam))
    vals, vecs = so.hessian_eigs(case.prob, case.theta, 3, key=jr.key(2))
    _close(vals, dn.lam[::-1][:3], 0, 1e-9 * scale)
    _assert_vectors(vecs, dn.u[:, ::-1][:, :3])
    vals, vecs = so.hessian_eigs(case.prob, case.theta, 2, key=jr.key(3), which="smallest")
    _close(vals, dn.lam[:2], 0, 1e-9 * scale)
    _assert_vectors(vecs, dn.u[:, :2])


def test_hessian_trace_against_exact_trace(case):
    """Hutchinson and Hutch++ within 4 standard errors of Tr H. Hutchinson's standard error
    is its probes' sample standard deviation over √n, and those probes' variance matches the
    exact Var(zᵀHz) = 2(‖H‖²_F − Σ Hᵢᵢ²) within 4 standard errors of a sample variance
    (256 probes; the standard error from their fourth central moment, 13-15% of the
    variance here, so a variance off by 2× fails in both cases)."""
    h = case.dense.hessian
    exact = np.trace(h)
    tr = so.hessian_trace(case.prob, case.theta, key=jr.key(4), n_probes=256)
    _within(tr.value, tr.stderr, exact)
    samples = np.asarray(tr.samples)
    _close(tr.stderr, np.std(samples, ddof=1) / math.sqrt(256), 1e-12, 0)
    var_exact = 2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2))
    centred = samples - samples.mean()
    var, m4 = np.var(samples, ddof=1), np.mean(centred**4)
    assert abs(var - var_exact) <= 4 * math.sqrt((m4 - var**2) / 256), (var, var_exact)
    hpp = so.hessian_trace(case.prob, case.theta, key=jr.key(5), n_probes=30, estimator=so.curvature.HutchPlusPlus())
    _within(hpp.value, hpp.stderr, exact)
    assert hpp.n_matvecs == 30


def test_hessian_density_against_eigh(case):
    """SLQ with n_iter = d: every probe's nodes are the d eigenvalues of H (1e-8·‖H‖), its
    weights are nonnegative and sum to 1; the first two moments estimate Tr H/d and
    Tr H²/d within 4 standard errors."""
    dn, d = case.dense, case.dim
    dens = so.curvature.hessian_density(case.prob, case.theta, key=jr.key(7), n_probes=8, n_iter=d)
    nodes, weights = np.asarray(dens.nodes), np.asarray(dens.weights)
    assert nodes.shape == weights.shape == (8, d) and dens.dim == d
    scale = np.max(np.abs(dn.lam))
    _close(np.sort(nodes, axis=1), np.tile(dn.lam, (8, 1)), 0, 1e-8 * scale)
    assert np.all(weights >= -1e-14)
    _close(weights.sum(axis=1), 1.0, 1e-12)
    _within(dens.moment(1), dens.moment_stderr(1), np.sum(dn.lam) / d)
    _within(dens.moment(2), dens.moment_stderr(2), np.sum(dn.lam**2) / d)


# ----------------------------------------------------------------------------- noise
def test_noise_eigs_match_dense_covariance(case):
    """Top-3 of D from the Gram route and from streamed Lanczos on D·v (chunks of 5,
    N = 16 not a multiple) equal eigh of the dense D: values to 1e-9·‖D‖, vectors to
    1 − |cos| < 1e-6."""
    dn = case.dense
    for kw in ({}, {"streaming": True, "chunk_size": 5}):
        vals, vecs = so.noise_eigs(case.prob, case.theta, 3, **kw)
        _close(vals, dn.mu[::-1][:3], 0, 1e-9 * dn.mu[-1])
        _assert_vectors(vecs, dn.v[:, ::-1][:, :3])


def test_alignment_matches_dense(case):
    """Exact alignment (n_probes=None): every field against H and D formed densely."""
    dn, k = case.dense, 2
    al = so.curvature.alignment(case.prob, case.theta, key=jr.key(8), k=k, n_probes=None)
    h, noise = dn.hessian, dn.noise
    assert al.dim == case.dim
    _close(al.trace_h, np.trace(h), 1e-10)
    _close(al.trace_d, np.trace(noise), 1e-10)
    _close(al.trace_hd, np.trace(h @ noise), 1e-10)
    _close(al.ratio, np.trace(h @ noise) / (np.trace(h) * np.trace(noise)), 1e-10)
    assert float(al.trace_h_stderr) == float(al.trace_hd_stderr) == 0.0
    lam, u = dn.lam[::-1][:k], dn.u[:, ::-1][:, :k]
    _close(al.hessian_values, lam, 0, 1e-9 * np.max(np.abs(dn.lam)))
    _close(al.noise_values, dn.mu[::-1][:k], 0, 1e-9 * dn.mu[-1])
    q = np.einsum("ik,ij,jk->k", u, noise, u)
    _close(al.noise_along_hessian, q, 0, 1e-6 * dn.mu[-1])
    _close(al.slope, np.sum(lam * q) / np.sum(lam**2), 1e-6)
    _close(al.overlap, np.sum((u.T @ dn.v[:, ::-1][:, :k]) ** 2) / k, 0, 1e-6)
    _close(al.grad_norm_sq, dn.grad @ dn.grad, 1e-10)
    _close(al.noise_scale, np.trace(noise) / (dn.grad @ dn.grad), 1e-10)


# ----------------------------------------------------------------------------- training paths
@pytest.fixture(scope="module")
def runs(case):
    """SGD and optax SGD paths with the same key, and a tracked optax run with that key."""
    key = jr.key(30)
    sgd = so.simulate(so.SGD(case.prob, LR, BATCH), case.theta, key=key, n_paths=2, n_steps=N_STEPS)
    opt = so.simulate(so.OptaxDynamics(case.prob, OPT, BATCH), case.theta, key=key, n_paths=2, n_steps=N_STEPS)
    hist = so.curvature.track(case.prob, OPT, case.theta, key=key, n_steps=N_STEPS, every=EVERY, batch_size=BATCH,
                              k=2, n_probes=16)
    return key, sgd, opt, hist


def test_sgd_steps_are_training_mode_minibatch_steps(case, runs):
    """Every step of so.SGD is θ − lr·∇ batch_loss(θ, batch) on the batch the engine drew,
    B i.i.d. indices from the step key fold_in(fold_in(key, i), j); for the CNN the batch's
    own BatchNorm statistics. To 1e-10."""
    key, ens, _, _ = runs
    ys = np.asarray(ens.ys)
    assert ys.shape == (2, N_STEPS + 1, case.dim) and np.all(np.isfinite(ys))
    _close(ens.ts, LR * np.arange(N_STEPS + 1), 1e-12)
    _close(ys[:, 0], np.tile(np.asarray(case.theta), (2, 1)), 0)
    grad = jax.jit(jax.grad(case.batch_loss))
    for i in range(2):
        for j in range(N_STEPS):
            idx = jr.randint(jr.fold_in(jr.fold_in(key, i), j), (BATCH,), 0, N)
            batch = jax.tree_util.tree_map(lambda a: a[idx], case.prob.data)
            g = np.asarray(grad(ys[i, j], batch))
            _close(ys[i, j + 1], ys[i, j] - LR * g, 1e-10, 1e-12)
    if case.name == "flax_cnn":  # the reference is discriminating: not the running statistics' gradient
        g_eval = np.mean(np.asarray(case.reference(ys[i, j])[2])[np.asarray(idx)], axis=0)
        assert np.linalg.norm(g - g_eval) > 1e-2 * np.linalg.norm(g)
    assert np.max(np.abs(ys[0, -1] - ys[1, -1])) > 1e-4  # the paths drew different batches


def test_optax_sgd_equals_sgd(case, runs):
    """OptaxDynamics(optax.sgd(lr)) draws the same batches as SGD from the same key: the
    same paths, to rounding."""
    _, sgd, opt, _ = runs
    _close(opt.ys, sgd.ys, 1e-12, 1e-14)


def test_track_records_dense_truth_along_its_path(case, runs):
    """track's training is path 0 of the optax ensemble; at each record (steps 0, 2, 4) the
    recorded sharpness, loss, ‖∇L‖², Tr D, top of D and vⱼᵀDvⱼ equal the dense values at
    those parameters; Hutchinson Tr H and Tr(HD) (16 probes) and the ratio within 5
    standard errors (t with 15 degrees of freedom)."""
    _, _, opt, hist = runs
    _close(hist.step, [0, 2, 4], 0)
    _close(hist.final, opt.ys[0, -1], 1e-12, 1e-14)
    for r in range(3):
        dn = case.at(opt.ys[0, EVERY * r])
        h_scale, k = np.max(np.abs(dn.lam)), 2
        lam, u = dn.lam[::-1][:k], dn.u[:, ::-1][:, :k]
        assert _gaps_ok(dn.lam, [case.dim - 1, case.dim - 2], h_scale)
        _close(hist.sharpness[r], lam, 0, 1e-9 * h_scale)
        _close(hist.loss[r], dn.loss, 1e-12)
        _close(hist.grad_norm_sq[r], dn.grad @ dn.grad, 1e-10)
        _close(hist.trace_d[r], np.trace(dn.noise), 1e-10)
        _close(hist.noise_values[r], dn.mu[::-1][:k], 0, 1e-9 * dn.mu[-1])
        _close(hist.noise_along_hessian[r], np.einsum("ik,ij,jk->k", u, dn.noise, u), 0, 1e-6 * dn.mu[-1])
        _within(hist.trace_h[r], hist.trace_h_stderr[r], np.trace(dn.hessian), 5.0)
        _within(hist.trace_hd[r], hist.trace_hd_stderr[r], np.trace(dn.hessian @ dn.noise), 5.0)
        ratio = np.trace(dn.hessian @ dn.noise) / (np.trace(dn.hessian) * np.trace(dn.noise))
        _within(hist.ratio[r], hist.ratio_stderr[r], ratio, 5.0)
    assert not np.allclose(hist.sharpness[0], hist.sharpness[-1], rtol=1e-6)  # the records moved


# ----------------------------------------------------------------------------- the SDE
@pytest.fixture(scope="module")
def sde_runs(case):
    dyn = so.SGDSDE(case.prob, SDE_LR, SDE_BATCH, so.MinibatchNoise())
    key = jr.key(40)
    ens = so.simulate(dyn, case.theta, key=key, n_paths=SDE_PATHS, n_steps=SDE_STEPS)
    excursion = np.max(np.linalg.norm(np.asarray(ens.ys[:, 1:]) - np.asarray(case.theta), axis=-1), axis=1)
    return dyn, key, ens, excursion


def test_sgdsde_minibatch_noise_step(case, sde_runs):
    """One Euler–Maruyama step of SGDSDE(MinibatchNoise()) at dt = lr is
    θ − lr·∇L + lr/√(B N)·Gcᵀz with the documented normals z = normal(fold_in(fold_in(key,
    i), 0), (N,)) (exact, 1e-10, first 3 paths); over 200 paths the increment's
    projections on the top-3 eigenvectors of D have mean 0 and variance lr²μⱼ/B (4
    standard errors), and it has no component outside the span of the centred gradients."""
    dyn, key, ens, _ = sde_runs
    dn, th = case.dense, np.asarray(case.theta)
    ys = np.asarray(ens.ys)
    assert np.all(np.isfinite(ys)) and not np.any(np.asarray(ens.diverged))
    noise = ys[:, 1] - th + SDE_LR * dn.grad  # (paths, d): the increment minus its drift
    for i in range(3):
        z = np.asarray(jr.normal(jr.fold_in(jr.fold_in(key, i), 0), (N,)))
        _close(noise[i], SDE_LR / math.sqrt(SDE_BATCH * N) * dn.centred.T @ z, 1e-10, 1e-13)
    for j in (1, 2, 3):
        e = noise @ dn.v[:, -j]
        m, se = mean_and_se(e)
        _within(m, se, 0.0)
        m2, se2 = mean_and_se(e**2)
        _within(m2, se2, SDE_LR**2 * dn.mu[-j] / SDE_BATCH)
    # directions orthogonal to every centred gradient carry no noise
    w = np.asarray(jr.normal(jr.key(41), (case.dim,)))
    basis, _ = np.linalg.qr(dn.centred.T)  # (d, N) spans the rows of Gc
    w = w - basis @ (basis.T @ w)
    w /= np.linalg.norm(w)
    assert np.max(np.abs(noise @ w)) < 1e-12 * np.max(np.abs(noise))


def test_first_exit_equals_the_simulated_paths(case, sde_runs):
    """first_exit from the ball of radius r (the median maximal excursion) with the
    simulate key: exit times, flags and positions are those of the simulated paths."""
    dyn, key, ens, excursion = sde_runs
    th = case.theta
    r = float(np.median(excursion))  # between two order statistics: half the paths exit
    ex = so.first_exit(dyn, th, lambda t: jnp.linalg.norm(t - th) > r, key=key, n_paths=SDE_PATHS,
                       max_steps=SDE_STEPS)
    ys = np.asarray(ens.ys)
    out = np.linalg.norm(ys[:, 1:] - np.asarray(th), axis=-1) > r  # (paths, steps)
    exited = out.any(axis=1)
    first = np.where(exited, out.argmax(axis=1) + 1, SDE_STEPS)  # step index of the exit, or the horizon
    assert int(exited.sum()) == SDE_PATHS // 2
    np.testing.assert_array_equal(np.asarray(ex.exited), exited)
    assert not np.any(np.asarray(ex.diverged))
    _close(ex.times, SDE_LR * first, 1e-12)
    _close(ex.horizon, SDE_LR * SDE_STEPS, 1e-12)
    _close(ex.positions, ys[np.arange(SDE_PATHS), first], 1e-10, 1e-13)
    assert len(np.unique(first[exited])) > 1  # exits at several steps, not all at the first


def test_stability_radius_is_the_quantile_of_simulated_excursions(case, sde_runs):
    """stability_radius with the simulate key: the running maxima are those of the
    simulated paths (1e-10), and r(δ) is their ⌈n(1 − δ)⌉-th order statistic, inside its
    order-statistics interval."""
    dyn, key, _, excursion = sde_runs
    delta = 0.25
    rad = so.stability_radius(dyn, case.theta, key=key, delta=delta, n_steps=SDE_STEPS, n_paths=SDE_PATHS)
    _close(rad.max_excursion, excursion, 1e-10, 1e-14)
    assert rad.n_diverged == 0
    k = math.ceil(SDE_PATHS * (1 - delta))
    assert rad.radius == pytest.approx(np.sort(excursion)[k - 1], rel=1e-10)
    assert rad.low < rad.radius < rad.high
    assert rad.low >= np.quantile(excursion, 0.6) and rad.high <= np.quantile(excursion, 0.9)
