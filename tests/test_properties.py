"""Property tests of the public entry points under random and bad input (hypothesis).

Every case draws each argument either valid or broken in one of many ways (shape, dtype,
NaN/inf, zero/negative sizes, wrong key types, mismatched pytrees, impossible parameters).
The property: with every argument valid the call returns a result whose non-finite paths
are flagged (never a NaN hidden in a mean); with some argument broken it raises a
``ValueError`` whose message names one of the broken arguments. Any other exception (an
XLA error, a ``TypeError`` from deep inside) fails the test. The number of cases run is
printed by ``pytest --hypothesis-show-statistics tests/test_properties.py``.
"""

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sde_opt as so

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

D = 2
PROB = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 3.0])))
SDE = so.SGDSDE(PROB, lr=0.1, batch_size=1, noise=so.HessianNoise())


def arg(valid, *broken):
    """An argument strategy: ``(value, ok)`` pairs, valid values or broken ones."""
    return st.one_of(valid.map(lambda v: (v, True)), *[b.map(lambda v: (v, False)) for b in broken])


BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf])
sizes = arg(st.integers(1, 6), st.integers(-3, 0), st.sampled_from([2.5, "3", None, True]))
keys = arg(st.integers(0, 2**31 - 1).map(jr.key),
           st.one_of(st.integers(0, 10), st.none(), st.just(np.zeros(3, np.uint32)), st.just(jnp.zeros(2)),
                     st.just(jr.split(jr.key(0), 2))))


def vectors(d=D, batch=None):
    """Start points: valid ``(d,)`` or ``(batch, d)``, or broken (shape, NaN/inf, complex)."""
    good_shapes = [(d,)] + ([(batch, d)] if batch else [])
    good = st.sampled_from(good_shapes).flatmap(
        lambda s: st.lists(st.floats(-2, 2), min_size=math.prod(s), max_size=math.prod(s)).map(
            lambda v: np.asarray(v).reshape(s)))
    wrong_shape = st.sampled_from([(), (d + 1,), (1, d, 1), (0,), (3, d + 1)]).map(np.ones)
    non_finite = st.tuples(st.integers(0, d - 1), BAD_FLOATS).map(lambda t: np.where(np.arange(d) == t[0], t[1], 0.5))
    complex_ = st.just(np.ones(d) * (1 + 1j))
    ints = st.just(np.ones(d, np.int32))  # integers are valid: converted to float
    return st.one_of(good.map(lambda v: (v, True)), ints.map(lambda v: (v, True)),
                     wrong_shape.map(lambda v: (v, False)), non_finite.map(lambda v: (v, False)),
                     complex_.map(lambda v: (v, False)))


# arguments that are values built from others: the error names the inner argument
ALIASES = {"exit_fn": ["exit_fn", "radius", "center", "normal", "offset", "region"]}


def check(call, args: dict):
    """Run ``call(**values)``: a result when all valid, a ValueError naming a broken one else."""
    values = {k: v for k, (v, _) in args.items()}
    broken = [n for k, (_, ok) in args.items() if not ok for n in ALIASES.get(k, [k])]
    if not broken:
        return call(**values)
    with pytest.raises(ValueError) as err:
        call(**values)
    msg = str(err.value)
    assert any(name in msg for name in broken), f"{broken} broken, message: {msg}"
    return None


@SETTINGS
@given(n_paths=sizes, n_steps=sizes, key=keys, y0=vectors(batch=3), data=st.data())
def test_simulate(n_paths, n_steps, key, y0, data):
    if y0[1] and np.ndim(y0[0]) == 2 and n_paths[1]:  # a (n, d) start must match n_paths
        y0 = (y0[0], n_paths[0] == y0[0].shape[0])
        if not y0[1]:
            n_paths = (n_paths[0], False)
    save_every = data.draw(arg(st.integers(1, 6), st.integers(-1, 0)), "save_every")
    if save_every[1] and n_steps[1] and save_every[0] > n_steps[0]:
        save_every = (save_every[0], False)
    ens = check(lambda **kw: so.simulate(SDE, **kw),
                dict(y0=y0, key=key, n_paths=n_paths, n_steps=n_steps, save_every=save_every))
    if ens is not None:
        assert ens.ys.shape == (n_paths[0], n_steps[0] // save_every[0] + 1, D)
        assert bool(jnp.all(jnp.isfinite(ens.ys[~ens.diverged])))


@SETTINGS
@given(lr=arg(st.floats(1e-3, 0.5), st.floats(-1, 0), BAD_FLOATS),
       batch_size=arg(st.integers(1, 8), st.integers(-2, 0), st.just(1.5)),
       variance=arg(st.floats(0, 4), st.floats(-4, -1e-3), BAD_FLOATS))
def test_dynamics_and_noise_construction(lr, batch_size, variance):
    def make(lr, batch_size, variance):
        return so.SGDSDE(PROB, lr=lr, batch_size=batch_size, noise=so.IsotropicNoise(variance))

    dyn = check(make, dict(lr=lr, batch_size=batch_size, variance=variance))
    if dyn is not None:
        ens = so.simulate(dyn, jnp.ones(D), key=jr.key(0), n_paths=2, n_steps=3)
        assert bool(jnp.all(jnp.isfinite(ens.ys)))


@SETTINGS
@given(covariance=arg(st.floats(0.1, 3).map(lambda a: np.diag([a, 1.0])),
                  st.just(-np.eye(D)), st.just(np.ones((D, D + 1))), st.just(np.array([[1.0, 2.0], [0.0, 1.0]])),
                  st.just(np.full((D, D), np.nan)), st.just(np.eye(D + 1))),
       variances=arg(st.floats(0, 2).map(lambda a: np.array([a, 1.0])), st.just(np.array([-1.0, 1.0])),
                    st.just(np.ones(D + 1)), st.just(np.array([np.inf, 1.0]))))
def test_constant_and_diagonal_noise(covariance, variances):
    def make(covariance, variances):
        a = so.SGDSDE(PROB, lr=0.1, batch_size=1, noise=so.ConstantNoise(covariance=covariance))
        b = so.SGDSDE(PROB, lr=0.1, batch_size=1, noise=so.DiagonalNoise(variances=variances))
        return [so.simulate(x, jnp.ones(D), key=jr.key(0), n_paths=2, n_steps=2) for x in (a, b)]

    out = check(make, dict(covariance=covariance, variances=variances))
    if out is not None:
        assert all(bool(jnp.all(jnp.isfinite(e.ys))) for e in out)


REGIONS = [lambda: so.HalfSpace(jnp.array([1.0, 0.0]), 0.5), lambda: so.Ball(jnp.zeros(D), 1.5)]


@SETTINGS
@given(max_steps=sizes, key=keys, y0=vectors(),
       region=arg(st.sampled_from(REGIONS),
                  st.sampled_from([lambda: so.Ball(jnp.zeros(D), -1.0), lambda: so.Ball(jnp.zeros(D + 1), 1.0),
                                   lambda: so.HalfSpace(jnp.zeros(D), 0.0), lambda: so.HalfSpace(jnp.ones(D + 1), 0.0),
                                   lambda: 3.0, lambda: so.Ball(jnp.zeros(D), math.nan)])))
def test_first_exit(max_steps, key, y0, region):
    def run(y0, exit_fn, key, max_steps):
        return so.first_exit(SDE, jnp.asarray(y0) * 0.1 if np.ndim(y0) == 1 and np.all(np.isfinite(y0)) else y0,
                             exit_fn(), key=key, n_paths=4, max_steps=max_steps)

    ex = check(run, dict(y0=y0, exit_fn=region, key=key, max_steps=max_steps))
    if ex is not None:
        assert ex.times.shape == (4,)
        assert bool(jnp.all(jnp.isfinite(ex.times[ex.exited])))
        rate = so.escape_rate(ex)
        assert math.isfinite(float(rate.rate)) or not bool(jnp.any(ex.exited))


@SETTINGS
@given(k=arg(st.integers(1, D), st.integers(-2, 0), st.integers(D + 1, D + 3), st.just(1.5)),
       theta=vectors(), key=keys)
def test_hessian_eigs_and_trace(k, theta, key):
    def run(k, theta, key):
        return so.hessian_eigs(PROB, theta, k=k, key=key), so.hessian_trace(PROB, theta, key=key, n_probes=8)

    out = check(run, dict(k=k, theta=theta, key=key))
    if out is not None:
        (values, _), tr = out
        np.testing.assert_allclose(np.asarray(values), [3.0, 1.0][: k[0]], rtol=1e-6)
        assert abs(float(tr.value) - 4.0) <= 6 * float(tr.stderr) + 1e-9


def _loss(p, ex):
    return 0.5 * jnp.sum((ex["x"] @ p["w"] + p["b"] - ex["y"]) ** 2)


@SETTINGS
@given(n_x=st.integers(1, 5), n_y=st.integers(1, 5), extra_leaf=st.booleans(),
       bad_value=st.sampled_from([None, math.nan, math.inf]), theta_kind=st.sampled_from(["flat", "tree", "wrong_tree"]))
def test_problem_data_and_parameter_trees(n_x, n_y, extra_leaf, bad_value, theta_kind):
    x = np.ones((n_x, 3))
    if bad_value is not None:
        x[0, 0] = bad_value
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    data = {"x": x, "y": np.ones(n_y)}

    def make(data):
        return so.Problem(_loss, data, params=params)

    prob = check(make, dict(data=(data, n_x == n_y and bad_value is None)))
    if prob is None:
        return
    theta = {"flat": (prob.theta0, True),
             "tree": ([0.0, 0.1, 0.2, 0.3], True),  # a list of numbers is a flat vector
             "wrong_tree": ({"w": jnp.zeros(2), "b": jnp.zeros(())} if not extra_leaf else {"w": jnp.zeros(3)}, False)}
    t = theta[theta_kind]
    out = check(lambda theta: prob.loss(prob.check_params(theta, "theta")), dict(theta=t))
    if out is not None:
        assert math.isfinite(float(out))


def test_diverging_paths_are_flagged_and_refused_in_means():
    steep = so.SGD(so.problems.linear_regression(key=jr.key(0), n_examples=16, dim=2), lr=50.0, batch_size=2)
    ens = so.simulate(steep, jnp.ones(2), key=jr.key(0), n_paths=4, n_steps=400)
    assert ens.n_diverged == 4
    with pytest.raises(ValueError, match="diverged"):
        ens.mean()
    with pytest.raises(ValueError, match="all 4 paths diverged"):
        ens.mean(drop_diverged=True)  # no finite path left: an error, not a NaN


@SETTINGS
@given(delta=arg(st.floats(0.02, 0.9), st.floats(-1, 0), st.floats(1, 2), BAD_FLOATS),
       confidence=arg(st.floats(0.5, 0.99), st.sampled_from([0.0, 1.0, 1.5, math.nan])), n_paths=sizes)
def test_stability_radius(delta, confidence, n_paths):
    def run(delta, confidence, n_paths):
        return so.stability_radius(SDE, jnp.zeros(D), key=jr.key(0), delta=delta, confidence=confidence, n_steps=5,
                                   n_paths=n_paths)

    rad = check(run, dict(delta=delta, confidence=confidence, n_paths=n_paths))
    if rad is not None:
        assert rad.running_max.shape[0] == n_paths[0]
        assert not math.isnan(float(rad.radius))


@SETTINGS
@given(temperature=arg(st.floats(0, 2), st.floats(-2, -1e-3), BAD_FLOATS),
       seed=arg(st.integers(0, 100), st.sampled_from([1.5, "a", None, True])),
       noise=st.sampled_from([so.HessianNoise(), so.IsotropicNoise(1.0), so.DiagonalNoise(jnp.ones(D))]))
def test_inject_noise(temperature, seed, noise):
    def run(temperature, seed):
        tx = so.inject_noise(PROB, noise, temperature=temperature, seed=seed)
        theta = jnp.ones(D)
        return tx.update(jnp.zeros(D), tx.init(theta), theta)[0]

    out = check(run, dict(temperature=temperature, seed=seed))
    if out is not None:
        assert out.shape == (D,) and bool(jnp.all(jnp.isfinite(out)))
