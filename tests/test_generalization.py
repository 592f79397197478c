"""The large-batch study (so.experiments.large_batch_gap) and the escape from a large-batch
minimum (network_escape): the SGD arm is the hand-written optax loop, the injected shapes
have equal trace at the reference points, the intervals are scipy's, diverged seeds are
counted and left out (float64, fixed keys)."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from scipy import stats

import sde_opt as so
from sde_opt.experiments import LARGE_BATCH_ARMS as ARMS
from sde_opt.experiments import correlation_interval, model_inits, proportion_interval, t_interval

SMALL = dict(n_train=64, hidden=4, n_seeds=2, n_steps=15, lr=0.3, small_batch=8)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_sgd_arms_are_the_hand_written_optax_loop(model):
    key = jr.key(3)
    res = so.experiments.large_batch_gap(key=key, arms=("small_batch", "large_batch"), curvature=False, model=model,
                                         channels=2, **SMALL)
    k_data, k_init, k_run, _ = jr.split(key, 4)
    train, test = so.experiments.digits_split(key=k_data, n_train=64, hidden=4, model=model, channels=2)
    assert res.model == model and train.theta0.shape == ((64 * 4 + 4 + 4 * 10 + 10,) if model == "mlp" else
                                                            (9 * 2 + 2 + 16 * 2 * 10 + 10,))
    y0 = model_inits(train, key=k_init, n_seeds=2)
    n, b = train.n_examples, SMALL["small_batch"]
    opt = optax.sgd(SMALL["lr"])

    @jax.jit
    def step(theta, state, idx):  # the plain optax loop: mean gradient of the batch, optax.sgd
        batch = jax.tree_util.tree_map(lambda a: a[idx], train.data)
        g = jax.grad(lambda t: jnp.mean(jax.vmap(train.example_loss, (None, 0))(t, batch)))(theta)
        updates, state = opt.update(g, state)
        return optax.apply_updates(theta, updates), state
    for row, (arm, batch) in enumerate([("small_batch", b), ("large_batch", n)]):
        i = ARMS.index(arm)
        for s in range(2):
            theta, state = y0[s], opt.init(y0[s])
            k_path = jr.fold_in(jr.fold_in(k_run, i), s)
            for j in range(SMALL["n_steps"]):
                idx = jr.randint(jr.fold_in(k_path, j), (batch,), 0, n) if arm == "small_batch" else jnp.arange(n)
                theta, state = step(theta, state, idx)
            np.testing.assert_allclose(res.final[row, s], theta, rtol=1e-10, atol=1e-12)
            assert res.test_loss[row, s] == pytest.approx(float(test.loss(theta)), rel=1e-10)
            assert res.train_loss[row, s] == pytest.approx(float(train.loss(theta)), rel=1e-10)
    assert np.all(np.isnan(res.lambda_max)) and "not measured" in res.table()
    assert res.temperature == pytest.approx(1 / b)  # full batch adds no noise of its own


def test_injected_shapes_have_equal_trace_at_the_reference_points():
    train, _ = so.experiments.digits_split(key=jr.key(0), n_train=40, hidden=2, label_noise=0.25)
    assert train.info["n_flipped"] > 0
    points = model_inits(train, key=jr.key(1), n_seeds=2)
    # the traces are equal on average over the reference points (each shape's scale is one number)
    noises = so.experiments.equal_trace_injections(train, points, n_probes=None)
    assert set(noises) == {"isotropic", "diagonal", "fisher", "minibatch", "hessian"}
    target = np.mean([float(jnp.trace(so.MinibatchNoise().covariance(train, p))) for p in points])
    for name, noise in noises.items():
        got = np.mean([float(jnp.trace(noise.covariance(train, p))) for p in points])
        assert got == pytest.approx(target, rel=1e-9), name


def test_intervals_are_scipys():
    rng = np.random.default_rng(0)
    v = rng.normal(size=12)
    m, lo, hi, n = t_interval(np.r_[v, np.nan, np.inf], 0.9)
    assert n == 12 and m == pytest.approx(v.mean())
    want = stats.t.interval(0.9, 11, loc=v.mean(), scale=stats.sem(v))
    assert (lo, hi) == pytest.approx(want, rel=1e-12)
    for k, n in [(0, 20), (7, 20), (20, 20), (3, 64)]:
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert proportion_interval(k, n, 0.95, method="wilson") == pytest.approx((ci.low, ci.high), abs=1e-12)
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert proportion_interval(k, n, 0.95) == pytest.approx((ci.low, ci.high), abs=1e-12)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    r, lo, hi, rho, n = correlation_interval(x, y)
    ref = stats.pearsonr(x, y)
    ci = ref.confidence_interval(0.95)
    assert (r, lo, hi) == pytest.approx((ref.statistic, ci.low, ci.high), rel=1e-9)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic) and n == 30


def _fake(diverged):
    a, s = 2, 3
    vals = np.arange(a * s, dtype=float).reshape(a, s)
    metrics = {m: vals.copy() for m in ("test_acc", "test_loss", "train_loss", "train_acc", "lambda_max",
                                        "trace_h", "alignment")}
    return so.experiments.LargeBatchGap(arms=("small_batch", "large_batch"), diverged=np.asarray(diverged, float),
                                        lrs=np.ones(a), batch=np.array([4.0, 16.0]), trace_at_init=np.ones(a),
                                        trace_at_ref=np.ones(a), final=np.zeros((a, s, 2)), temperature=0.25,
                                        n_steps=1, n_train=16, n_test=4, label_noise=0.0, **metrics)


def test_diverged_seeds_are_counted_not_averaged(tmp_path):
    res = _fake([[0, 1, 0], [0, 0, 0]])
    m, lo, hi, n = res.summary("test_acc")["small_batch"]
    assert n == 2 and m == pytest.approx(1.0)  # seeds 0 and 2: values 0 and 2
    assert res.summary("test_acc")["large_batch"][3] == 3
    assert " 2/3" in res.table()
    so.save(tmp_path / "gap", res)
    back, _ = so.load(tmp_path / "gap")
    np.testing.assert_array_equal(back.diverged, res.diverged)
    assert back.arms == res.arms
    with pytest.raises(ValueError, match="metric must be one of"):
        res.summary("accuracy")


def test_network_escape_gd_stays_and_counts_are_wilson():
    train, _ = so.experiments.digits_split(key=jr.key(0), n_train=32, hidden=3)
    theta = model_inits(train, key=jr.key(1), n_seeds=1)[0]
    esc = so.experiments.network_escape(train, theta, key=jr.key(2), kinds=("gd", "small_batch"), lr=0.5,
                                        small_batch=4, loss_rise=1e-3, n_paths=8, max_steps=12)
    # GD from a non-minimum descends: the loss never rises above its start
    assert esc.n_left[0] == 0 and esc.mean_time[0] == pytest.approx(12)
    for i in range(2):
        assert (esc.low[i], esc.high[i]) == pytest.approx(proportion_interval(int(esc.n_left[i]), 8, method="wilson"), abs=1e-12)
    assert math.isfinite(esc.lambda_max) and "Wilson" in esc.table()
    with pytest.raises(ValueError, match="kinds must be"):
        so.experiments.network_escape(train, theta, key=jr.key(2), kinds=("adam",))
