"""Observers: what the engine records is a value. A user's observer, the built-in ones
against simulate's stored paths, several observers in one run, early stop, the bits of
the engine against values recorded before it was unified, and argument checks."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sde_opt as so


class MeanSquare(so.AbstractObserver):
    """A user's observer: the running mean of ``‖θ_k‖²`` over steps ``1 … n_steps``."""

    def init(self, theta0, run):
        return jnp.zeros(theta0.shape[0], theta0.dtype)

    def update(self, total, step):
        return total + jnp.sum(step.theta**2, axis=-1)

    def finalize(self, total, theta, run):
        return total / run.n_steps


def _sde():
    prob = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    return prob, so.SGDSDE(prob, lr=0.05, batch_size=1, noise=so.HessianNoise())


def test_user_observer_matches_the_same_quantity_from_simulate():
    _, sde = _sde()
    kw = dict(key=jr.key(3), n_paths=9, n_steps=25)
    got = so.observe(sde, jnp.ones(2), MeanSquare(), **kw)
    ys = so.simulate(sde, jnp.ones(2), **kw).ys
    total = jnp.zeros(9)
    for k in range(1, 26):  # the same sums in the same order as the observer
        total = total + jnp.sum(ys[:, k] ** 2, axis=-1)
    np.testing.assert_array_equal(got, total / 25)
    # the observer sees every step, so it does not depend on a chunk size either
    np.testing.assert_array_equal(so.observe(sde, jnp.ones(2), MeanSquare(), chunk_size=2, **kw), got)


def test_builtin_observers_match_simulate_paths():
    prob, sde = _sde()
    kw = dict(key=jr.key(4), n_paths=6, n_steps=20)
    ens = so.simulate(sde, jnp.ones(2), save_every=5, **kw)
    out = so.observe(sde, jnp.ones(2), {
        "pos": so.SavePositions(every=5),
        "loss": so.SaveObservable(prob.loss, every=5),
        "max": so.RunningMax(jnp.zeros(2), every=5),
        "msq": MeanSquare(),
    }, **kw)
    np.testing.assert_array_equal(out["pos"]["ys"], ens.ys)
    np.testing.assert_array_equal(out["pos"]["diverged"], ens.diverged)
    np.testing.assert_allclose(out["loss"], jax.vmap(jax.vmap(prob.loss))(ens.ys), rtol=1e-13)
    ts, runs = so.max_excursion(sde, jnp.zeros(2), key=jr.key(4), n_paths=6, n_steps=20, save_every=5,
                                y0=jnp.ones(2))
    np.testing.assert_array_equal(out["max"], runs)
    full = so.simulate(sde, jnp.ones(2), **kw).ys
    dist = jnp.linalg.norm(full, axis=-1)
    expect = jnp.stack([jnp.max(dist[:, : 5 * (k + 1) + 1], axis=1) for k in range(4)], axis=1)
    np.testing.assert_allclose(out["max"], expect, rtol=1e-13)


def test_first_exit_observer_equals_first_exit_and_waits_for_other_observers():
    _, sde = _sde()
    hot = so.SGDSDE(sde.problem, lr=0.05, batch_size=1, noise=so.IsotropicNoise(40.0))
    region = so.Ball(jnp.zeros(2), 1.0)
    kw = dict(key=jr.key(5), n_paths=20)
    ex = so.first_exit(hot, jnp.zeros(2), region, max_steps=200, bridge=True, **kw)
    assert int(ex.n_steps_run) < 200  # stopped early
    alone = so.observe(hot, jnp.zeros(2), so.FirstExit(region, bridge=True), n_steps=200, **kw)
    both = so.observe(hot, jnp.zeros(2), (so.FirstExit(region, bridge=True), so.SavePositions(every=10)),
                      n_steps=200, **kw)
    for name in ("times", "exited", "positions", "diverged"):
        np.testing.assert_array_equal(alone[name], getattr(ex, name))
        np.testing.assert_array_equal(both[0][name], getattr(ex, name))
    assert both[1]["ys"].shape == (20, 21, 2)  # SavePositions is never done: all 200 steps ran
    # a path is seen outside at its exit time: the saved path at that step is outside too
    idx = np.asarray(jnp.round(ex.times / 0.05)).astype(int)
    full = so.simulate(hot, jnp.zeros(2), n_steps=200, **kw).ys
    np.testing.assert_array_equal(full[np.arange(20), idx][~np.asarray(ex.exited)],
                                  ex.positions[~np.asarray(ex.exited)])


def test_observers_check_their_arguments():
    prob, sde = _sde()
    kw = dict(key=jr.key(0), n_paths=2, n_steps=12)
    with pytest.raises(ValueError, match="different grids"):
        so.observe(sde, jnp.ones(2), (so.SavePositions(every=3), so.SavePositions(every=4)), **kw)
    with pytest.raises(ValueError, match="not a multiple of every=5"):
        so.observe(sde, jnp.ones(2), so.SavePositions(every=5), **kw)
    with pytest.raises(ValueError, match="observers must be observers"):
        so.observe(sde, jnp.ones(2), [so.SavePositions(), lambda th: th], **kw)
    with pytest.raises(ValueError, match="every must be >= 1"):
        so.SavePositions(every=0)
    with pytest.raises(ValueError, match="fn must be a function"):
        so.SaveObservable(3.0)
    with pytest.raises(ValueError, match="integrator must be"):
        so.observe(sde, jnp.ones(2), so.SavePositions(), integrator="euler", **kw)


# ---------------------------------------------------------------- the bits, before and after
# (sum, weighted sum) of each result, recorded on the engine before it had observers and
# integrators (commit bf37ebb: one loop per analysis), float64, CPU. Any change in the
# random numbers or in the order of the updates moves these at O(1).
BEFORE = {
    "simulate_sde_isotropic_d2": [197.82713538126342, 787.4711703713651],
    "simulate_sde_isotropic_d5": [491.47375440957717, 1959.954883626111],
    "simulate_sde_minibatch": [-25.295820230698304, -102.02063276515864],
    "simulate_sgd": [-25.81206684850793, -103.39863720611746],
    "simulate_heavy_ball": [233.91961069975443, 930.119970033832],
    "simulate_noisy_gd": [197.1143181374531, 780.349179244336],
    "first_exit_ball_bridge": [99.55, 387.45],
    "first_exit_halfspace_positions": [-3.2707726172849902, -14.191631406856482],
    "max_excursion_sde": [15.605540898234434, 60.94900358939224],
    "coupled_paths_refine3_discrete": [224.9699180743247, 896.18232355423],
    "coupled_paths_refine3_continuous": [228.04968031438125, 908.4301493767186],
}


def _feature(x):
    a = np.asarray(x, np.float64).ravel()
    w = np.arange(a.size) % 7 + 1.0
    return [float(np.sum(a)), float(np.sum(w * a))]


def _regression_cases():
    key = jr.key(42)
    q2 = so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    q5 = so.landscapes.quadratic(jnp.diag(jnp.linspace(1.0, 3.0, 5)))
    lin = so.problems.linear_regression(key=jr.key(3), n_examples=16, dim=3)
    sim = dict(key=key, n_paths=37, n_steps=11, save_every=3, chunk_size=16)
    iso2 = so.SGDSDE(q2, lr=0.05, batch_size=1, noise=so.IsotropicNoise(1.0))
    hot = so.SGDSDE(q2, lr=0.05, batch_size=1, noise=so.IsotropicNoise(4.0))
    ex = dict(key=key, n_paths=41, max_steps=50, chunk_size=16, block=8)
    model = so.optimizers.NoisyOptax(q2, optax.sgd(0.05), 1, so.IsotropicNoise(1.0), dt=0.05)
    coupled = lambda: so.optimizers.coupled_paths(model, iso2, jnp.ones(2), key=key, n_paths=17, n_steps=9, refine=3)
    return {
        "simulate_sde_isotropic_d2": lambda: so.simulate(iso2, jnp.ones(2), **sim).ys,
        "simulate_sde_isotropic_d5": lambda: so.simulate(
            so.SGDSDE(q5, lr=0.05, batch_size=1, noise=so.IsotropicNoise(1.0)), jnp.ones(5), **sim).ys,
        "simulate_sde_minibatch": lambda: so.simulate(
            so.SGDSDE(lin, lr=0.05, batch_size=4, noise=so.MinibatchNoise()), jnp.zeros(3), **sim).ys,
        "simulate_sgd": lambda: so.simulate(so.SGD(lin, lr=0.05, batch_size=4), jnp.zeros(3), **sim).ys,
        "simulate_heavy_ball": lambda: so.simulate(
            so.optimizers.HeavyBall(q2, lr=0.01, momentum=0.9, batch_size=1, noise=so.IsotropicNoise(1.0)), jnp.ones(2),
            **sim).ys,
        "simulate_noisy_gd": lambda: so.simulate(
            so.NoisyGD(q2, lr=0.05, batch_size=1, noise=so.IsotropicNoise(1.0)), jnp.ones(2), **sim).ys,
        "first_exit_ball_bridge": lambda: so.first_exit(hot, jnp.zeros(2), so.Ball(jnp.zeros(2), 1.0), bridge=True,
                                                        **ex).times,
        "first_exit_halfspace_positions": lambda: so.first_exit(
            hot, jnp.zeros(2), so.HalfSpace(jnp.array([1.0, 0.0]), 0.8), **ex).positions,
        "max_excursion_sde": lambda: so.max_excursion(iso2, jnp.zeros(2), key=key, n_paths=30, n_steps=12,
                                                      save_every=4, chunk_size=16)[1],
        "coupled_paths_refine3_discrete": lambda: coupled()[0].ys,
        "coupled_paths_refine3_continuous": lambda: coupled()[1].ys,
    }


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_same_key_gives_the_numbers_of_the_engine_before_observers(name):
    np.testing.assert_allclose(_feature(_regression_cases()[name]()), BEFORE[name], rtol=1e-12)
