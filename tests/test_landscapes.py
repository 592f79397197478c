"""Analytic landscapes: the facts recorded in ``problem.info`` (minima, saddles, Hessians,
barriers) are checked against automatic differentiation of the loss itself."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import landscape_table

import sde_opt as so

TABLE = landscape_table()
IDS = [name for name, _ in TABLE]


def _points(prob, kind):
    return np.asarray(prob.info.get(kind, np.zeros((0, prob.dim))))


@pytest.mark.parametrize("name,prob", TABLE, ids=IDS)
def test_gradient_vanishes_at_recorded_stationary_points(name, prob):
    grad = eqx.filter_jit(prob.grad)
    n_points = 0
    for kind in ("minima", "saddles"):
        for p in _points(prob, kind):
            g = grad(jnp.asarray(p))
            assert float(jnp.max(jnp.abs(g))) < 1e-10, (name, kind, p, g)
            n_points += 1
    assert n_points >= 1


@pytest.mark.parametrize("name,prob", TABLE, ids=IDS)
def test_dense_hessian_matches_recorded_hessians(name, prob):
    hess = eqx.filter_jit(prob.hessian)
    autodiff = jax.jit(jax.hessian(prob.loss))
    for kind, hkind in (("minima", "hessians_min"), ("saddles", "hessians_saddle")):
        pts = _points(prob, kind)
        if len(pts) == 0:
            continue
        recorded = np.asarray(prob.info[hkind])
        assert recorded.shape == (len(pts), prob.dim, prob.dim)
        for p, h in zip(pts, recorded):
            np.testing.assert_allclose(hess(jnp.asarray(p)), h, rtol=1e-10, atol=1e-10, err_msg=f"{name} {kind}")
            np.testing.assert_allclose(autodiff(jnp.asarray(p)), h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,prob", TABLE, ids=IDS)
def test_minima_are_minima_and_saddles_are_saddles(name, prob):
    for h in np.asarray(prob.info["hessians_min"]):
        assert np.linalg.eigvalsh(h).min() > 0, name
    index = prob.info.get("saddle_index", 1)  # index-1 saddles (a maximum in 1-D) unless recorded otherwise
    for h in np.asarray(prob.info.get("hessians_saddle", np.zeros((0, 1, 1)))):
        assert np.sum(np.linalg.eigvalsh(h) < 0) == index, name


@pytest.mark.parametrize(
    "name,prob", [(n, p) for n, p in TABLE if "barrier" in p.info], ids=[n for n, p in TABLE if "barrier" in p.info]
)
def test_barrier_is_saddle_minus_minimum(name, prob):
    loss = eqx.filter_jit(prob.loss)
    saddle = float(loss(jnp.asarray(_points(prob, "saddles")[0])))
    mins = [float(loss(jnp.asarray(p))) for p in _points(prob, "minima")]
    barrier = np.atleast_1d(np.asarray(prob.info["barrier"]))
    if barrier.size == 1:  # symmetric wells: one barrier, the same from every minimum
        barrier = np.repeat(barrier, len(mins))
    np.testing.assert_allclose([saddle - m for m in mins], barrier, rtol=1e-10, atol=1e-12)


def test_double_well_parameters_are_what_they_say():
    prob = so.landscapes.double_well(barrier=0.7, curvature=3.0)
    a = float(prob.info["half_width"])
    np.testing.assert_allclose(float(jax.grad(jax.grad(lambda x: prob.loss(x[None])))(jnp.array([a])[0])), 3.0)
    np.testing.assert_allclose(prob.loss(jnp.zeros(1)) - prob.loss(jnp.array([a])), 0.7, rtol=1e-12)


def test_sharp_flat_barriers_and_curvatures():
    prob = so.landscapes.sharp_flat(sharp=8.0, flat=1.0, barrier=0.5)
    np.testing.assert_allclose(prob.info["barrier"][0], 0.5, rtol=1e-12)
    # both basins are real minima (with one quartic profile the flat one is the shallower)
    assert 0.0 < float(prob.info["barrier"][1]) < 0.5
    np.testing.assert_allclose(prob.info["values_min"], [prob.loss(m) for m in prob.info["minima"]], atol=1e-12)


def test_textbook_1d_examples():
    xs = so.landscapes.x_plus_sin()
    for p in xs.info["stationary"]:
        assert abs(float(xs.grad(p)[0])) < 1e-12 and abs(float(xs.hessian(p)[0, 0])) < 1e-12  # degenerate
    sm = so.landscapes.sin_minus_square(25.0)
    x = jnp.array([0.3])
    np.testing.assert_allclose(sm.grad(x)[0], 25 * np.cos(0.3) - 0.6, rtol=1e-12)


def test_styblinski_tang_has_2_to_the_d_local_minima():
    prob = so.landscapes.styblinski_tang(2)
    roots = np.roots([4.0, 0.0, -32.0, 5.0])  # ∂/∂x of x⁴ − 16x² + 5x, up to ½
    hess = eqx.filter_jit(prob.hessian)
    grad = eqx.filter_jit(prob.grad)
    minima = [r for r in roots.real if 12 * r**2 - 32 > 0]
    assert len(minima) == 2
    for x in minima:
        for y in minima:
            p = jnp.array([x, y])
            assert float(jnp.max(jnp.abs(grad(p)))) < 1e-10
            assert np.linalg.eigvalsh(np.asarray(hess(p))).min() > 0


def test_saddle_landscape_facts():
    prob = so.landscapes.saddle(jnp.array([-2.0, -0.5, 1.0, 3.0]), quartic=2.0)
    assert prob.info["saddle_index"] == 2 and prob.info["minima"].shape == (4, 4)
    np.testing.assert_allclose(prob.info["barrier"], (4.0 + 0.25) / 8.0, rtol=1e-12)
    # the 2-D strict saddle is the special case saddle([1, -1])
    a, b = so.landscapes.saddle(jnp.array([1.0, -1.0])), so.landscapes.strict_saddle()
    for p in (jnp.array([0.3, -0.7]), jnp.array([1.2, 0.4])):
        np.testing.assert_allclose(a.loss(p), b.loss(p), rtol=1e-12)
    np.testing.assert_allclose(np.sort(np.asarray(a.info["minima"]), axis=0), np.sort(np.asarray(b.info["minima"]), axis=0))


def test_landscape_bad_inputs():
    with pytest.raises(ValueError, match="eigenvalues"):
        so.landscapes.saddle(jnp.array([1.0, 2.0]))  # no negative direction
    with pytest.raises(ValueError, match="eigenvalues"):
        so.landscapes.saddle(jnp.array([-1.0, 0.0]))  # degenerate
    with pytest.raises(ValueError, match="eigenvalues"):
        so.landscapes.saddle(jnp.zeros((0,)))
    with pytest.raises(ValueError, match="quartic"):
        so.landscapes.saddle(jnp.array([-1.0, 1.0]), quartic=-1.0)
    with pytest.raises(ValueError, match="basis"):
        so.landscapes.saddle(jnp.array([-1.0, 1.0]), basis=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="hessian"):
        so.landscapes.quadratic(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="hessian"):
        so.landscapes.quadratic(jnp.array([[1.0, 2.0], [0.0, 1.0]]))  # not symmetric
    with pytest.raises(ValueError, match="hessian"):
        so.landscapes.quadratic(jnp.ones(3))
    with pytest.raises(ValueError, match="minimum"):
        so.landscapes.quadratic(jnp.eye(2), jnp.zeros(3))
    with pytest.raises(ValueError, match="barrier"):
        so.landscapes.double_well(barrier=0.0)
    with pytest.raises(ValueError, match="curvature"):
        so.landscapes.double_well(curvature=-1.0)
    with pytest.raises(ValueError, match="dim"):
        so.landscapes.double_well(dim=0)
    with pytest.raises(ValueError, match="transverse"):
        so.landscapes.double_well(dim=3, transverse=[1.0])
    with pytest.raises(ValueError, match="transverse"):
        so.landscapes.double_well(dim=2, transverse=[-1.0])  # the "minima" would be saddles
    with pytest.raises(ValueError, match="minimum"):
        so.landscapes.quadratic(jnp.eye(2), jnp.array([jnp.nan, 0.0]))
    with pytest.raises(ValueError, match="hessian"):
        so.landscapes.quadratic(jnp.array([[1.0, jnp.inf], [jnp.inf, 1.0]]))
    with pytest.raises(ValueError, match="sharp"):
        so.landscapes.sharp_flat(sharp=float("nan"))
    with pytest.raises(ValueError, match="dim"):
        so.landscapes.styblinski_tang(0)
