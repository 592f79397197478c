"""Slices of the loss (so.loss_slice, so.filter_normalize, so.slices): closed forms on
quadratics and the double well, filter norms on Equinox and Flax pytrees, PCA and projection
onto known planes, densities against numpy's histogram, chunk-size independence (same bits)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so


def _rotation(key, d):
    q, _ = jnp.linalg.qr(jr.normal(key, (d, d)))
    return q


def _quadratic(key, lams=(4.0, 1.5, 0.7, 0.2)):
    lams = jnp.asarray(lams)
    q = _rotation(key, lams.shape[0])
    h = q @ jnp.diag(lams) @ q.T
    minimum = jr.normal(jr.fold_in(key, 1), lams.shape)
    return so.landscapes.quadratic(h, minimum), q, lams, minimum


def _principal_cosines(a, b):
    """Cosines of the principal angles between the row spaces of a and b."""
    qa, _ = jnp.linalg.qr(a.T)
    qb, _ = jnp.linalg.qr(b.T)
    return jnp.linalg.svd(qa.T @ qb, compute_uv=False)


# ----------------------------------------------------------------------------- the slice
def test_slice_along_unit_eigenvectors_is_the_quadratic_form(getkey):
    prob, q, lams, minimum = _quadratic(getkey())
    a, b = jnp.linspace(-2.0, 2.0, 9), jnp.linspace(-1.0, 3.0, 7)
    z = so.loss_slice(prob, minimum, q[:, :2].T, grid=(a, b))
    want = 0.5 * (a[:, None] ** 2 * lams[0] + b[None, :] ** 2 * lams[1])
    assert z.shape == (9, 7) and z.dtype == jnp.float64
    np.testing.assert_allclose(z, want, rtol=1e-12, atol=1e-14)
    # 1-D: one direction, one coordinate array
    z1 = so.loss_slice(prob, minimum, q[:, 2][None], grid=(a,))
    np.testing.assert_allclose(z1, 0.5 * lams[2] * a**2, rtol=1e-12, atol=1e-14)


def test_slice_along_hessian_directions(getkey):
    prob, q, lams, minimum = _quadratic(getkey())
    dirs = so.slices.hessian_directions(prob, minimum, 2, key=getkey())
    np.testing.assert_allclose(jnp.abs(jnp.sum(dirs * q[:, :2].T, axis=1)), 1.0, atol=1e-10)
    g = jnp.linspace(-1.0, 1.0, 5)
    z = so.loss_slice(prob, minimum, dirs, grid=(g, g))
    np.testing.assert_allclose(z, 0.5 * (g[:, None] ** 2 * lams[0] + g[None, :] ** 2 * lams[1]), rtol=1e-9, atol=1e-12)


def _mlp(key, chunk_size=None):
    model = eqx.nn.MLP(3, 2, 5, 2, activation=jax.nn.tanh, key=key)
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    kx, ky = jr.split(jr.fold_in(key, 1))
    data = {"x": jr.normal(kx, (11, 3)), "y": jr.normal(ky, (11, 2))}
    loss = lambda m, ex: 0.5 * jnp.sum((m(ex["x"]) - ex["y"]) ** 2)  # noqa: E731
    return so.Problem(loss, data, params=model, chunk_size=chunk_size), model


def test_chunk_size_does_not_change_the_bits(getkey):
    key = getkey()
    prob, _ = _mlp(key)
    dirs = so.slices.random_directions(prob, prob.theta0, key=getkey())
    grid = (jnp.linspace(-1.0, 1.0, 7), jnp.linspace(-0.5, 0.5, 6))
    ref = so.loss_slice(prob, prob.theta0, dirs, grid=grid)
    for c in (2, 1000):
        assert np.array_equal(so.loss_slice(prob, prob.theta0, dirs, grid=grid, chunk_size=c), ref), c
    # one point at a time: XLA compiles a batch of one as an unbatched program (last-bit rounding)
    np.testing.assert_allclose(so.loss_slice(prob, prob.theta0, dirs, grid=grid, chunk_size=1), ref, rtol=1e-14)
    # a problem that streams its examples in chunks gives the same slice (to rounding)
    streamed, _ = _mlp(key, chunk_size=4)
    np.testing.assert_allclose(so.loss_slice(streamed, prob.theta0, dirs, grid=grid, chunk_size=8), ref, rtol=1e-13)
    # and each entry is the problem's loss at that point
    th = prob.theta0 + grid[0][2] * dirs[0] + grid[1][4] * dirs[1]
    np.testing.assert_allclose(ref[2, 4], prob.loss(th), rtol=1e-14)


def test_bad_arguments_raise():
    prob = so.landscapes.quadratic(jnp.eye(3))
    th, g = jnp.zeros(3), jnp.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match=r"\(k, d\).*directions\[None\]"):
        so.loss_slice(prob, th, jnp.ones(3), grid=(g,))
    with pytest.raises(ValueError, match="d = 3"):
        so.loss_slice(prob, th, jnp.ones((2, 4)), grid=(g, g))
    with pytest.raises(ValueError, match="k = 3 directions"):
        so.loss_slice(prob, th, jnp.eye(3), grid=(g, g, g))
    with pytest.raises(ValueError, match="grid has 1 coordinate arrays"):
        so.loss_slice(prob, th, jnp.eye(3)[:2], grid=(g,))
    with pytest.raises(ValueError, match="tuple of k"):
        so.loss_slice(prob, th, jnp.eye(3)[:2], grid=jnp.stack([g, g]))
    with pytest.raises(ValueError, match=r"grid\[1\] must be a non-empty 1-D"):
        so.loss_slice(prob, th, jnp.eye(3)[:2], grid=(g, jnp.ones((2, 2))))
    with pytest.raises(ValueError, match=r"grid\[0\] contains non-finite"):
        so.loss_slice(prob, th, jnp.eye(3)[:2], grid=(g.at[1].set(jnp.nan), g))
    with pytest.raises(ValueError, match="directions contains non-finite"):
        so.loss_slice(prob, th, jnp.eye(3)[:2].at[0, 0].set(jnp.inf), grid=(g, g))
    with pytest.raises(ValueError, match="theta contains non-finite"):
        so.loss_slice(prob, th.at[0].set(jnp.nan), jnp.eye(3)[:2], grid=(g, g))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        so.loss_slice(prob, th, jnp.eye(3)[:2], grid=(g, g), chunk_size=0)
    with pytest.raises(ValueError, match="direction must be a flat vector"):
        so.filter_normalize(prob, th, jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="trajectory must be a"):
        so.slices.pca_directions(jnp.ones(3))
    with pytest.raises(ValueError, match="n_points must be >= 2"):
        so.slices.interpolation(prob, th, th + 1.0, n_points=1)


# ----------------------------------------------------------------------------- filter normalisation
def _filters(leaf, axis):
    return jnp.moveaxis(leaf, axis, 0).reshape(leaf.shape[axis], -1)


def test_filter_normalize_equinox_mlp(getkey):
    prob, _ = _mlp(getkey())
    th = prob.theta0
    raw = jr.normal(getkey(), th.shape)
    assert so.slices.default_filter_axis(prob, th) == 0
    out = so.filter_normalize(prob, th, raw)
    for t, d in zip(jax.tree_util.tree_leaves(prob.unravel(th)), jax.tree_util.tree_leaves(prob.unravel(out))):
        if t.ndim >= 2:  # Linear.weight (out, in): filters are rows
            np.testing.assert_allclose(jnp.linalg.norm(_filters(d, 0), axis=1), jnp.linalg.norm(_filters(t, 0), axis=1),
                                       rtol=1e-13)
        else:  # biases are excluded
            assert np.all(d == 0)
    kept = so.filter_normalize(prob, th, raw, ignore_1d=False)
    for t, d in zip(jax.tree_util.tree_leaves(prob.unravel(th)), jax.tree_util.tree_leaves(prob.unravel(kept))):
        if t.ndim == 1:
            np.testing.assert_allclose(jnp.linalg.norm(d), jnp.linalg.norm(t), rtol=1e-13)
    # the filter axis as a rule: the columns instead
    cols = so.filter_normalize(prob, th, raw, filter_axis=lambda path, leaf: -1)
    w = prob.unravel(cols).layers[0].weight
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=0), jnp.linalg.norm(prob.unravel(th).layers[0].weight, axis=0),
                               rtol=1e-13)


def test_filter_normalize_equinox_conv(getkey):
    conv = eqx.nn.Conv2d(2, 3, 3, key=getkey())  # weight (out, in, kh, kw), bias (out, 1, 1)
    conv = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, conv)
    prob = so.Problem(lambda m: jnp.sum(m(jnp.ones((2, 5, 5))) ** 2), params=conv)
    out = prob.unravel(so.filter_normalize(prob, prob.theta0, jr.normal(getkey(), prob.theta0.shape)))
    np.testing.assert_allclose(jnp.linalg.norm(_filters(out.weight, 0), axis=1),
                               jnp.linalg.norm(_filters(conv.weight, 0), axis=1), rtol=1e-13)
    assert out.bias.shape == (3, 1, 1) and np.all(out.bias == 0)


def test_filter_normalize_flax_conv_and_dense(getkey):
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            x = nn.LayerNorm()(x.reshape(-1))
            return nn.Dense(3)(x)

    net = Net()
    x = jr.normal(getkey(), (5, 6, 6, 2))
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), net.init(getkey(), x[0]))
    loss = lambda v, ex: jnp.sum(net.apply(v, ex["x"]) ** 2)  # noqa: E731
    prob = so.Problem(loss, {"x": x}, params=variables)
    th = prob.theta0
    raw = jr.normal(getkey(), th.shape)
    # a zero filter in the direction (output channel 1 of the conv) and a zero filter of θ (dense unit 2)
    tree = prob.unravel(raw)
    tree["Conv_0"]["kernel"] = tree["Conv_0"]["kernel"].at[..., 1].set(0.0)
    raw = jax.flatten_util.ravel_pytree(tree)[0]
    tt = prob.unravel(th)
    tt["Dense_0"]["kernel"] = tt["Dense_0"]["kernel"].at[:, 2].set(0.0)
    th = jax.flatten_util.ravel_pytree(tt)[0]
    out = so.filter_normalize(prob, th, raw)
    assert np.all(np.isfinite(out))
    o, t = prob.unravel(out), prob.unravel(th)
    for name in ("Conv_0", "Dense_0"):  # Flax kernels (..., in, out): filters along the last axis
        want = jnp.linalg.norm(_filters(t[name]["kernel"], -1), axis=1)
        got = jnp.linalg.norm(_filters(o[name]["kernel"], -1), axis=1)
        if name == "Conv_0":
            want = want.at[1].set(0.0)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
        assert np.all(o[name]["bias"] == 0)
    assert np.all(o["LayerNorm_0"]["scale"] == 0) and np.all(o["LayerNorm_0"]["bias"] == 0)
    assert np.all(o["Dense_0"]["kernel"][:, 2] == 0)
    # Gaussian filter-normalised directions through the same rule
    dirs = so.slices.random_directions(prob, th, key=getkey())
    assert dirs.shape == (2, th.shape[0]) and np.all(np.isfinite(dirs))


def test_filter_normalize_flat_vector_is_one_filter(getkey):
    prob = so.landscapes.quadratic(jnp.eye(4))
    th, raw = jr.normal(getkey(), (4,)), jr.normal(getkey(), (4,))
    out = so.filter_normalize(prob, th, raw)
    np.testing.assert_allclose(out, raw * jnp.linalg.norm(th) / jnp.linalg.norm(raw), rtol=1e-14)
    assert np.all(so.filter_normalize(prob, th, jnp.zeros(4)) == 0)  # a zero direction: zero, not NaN
    single = so.problems.linear_regression(key=getkey(), dim=4)  # params: one (4,) vector
    np.testing.assert_allclose(jnp.linalg.norm(so.filter_normalize(single, th, raw)), jnp.linalg.norm(th), rtol=1e-14)


# ----------------------------------------------------------------------------- PCA and projections
def _planar_trajectory(key, d=12, t=30):
    ku, kv, kc, kf = jr.split(key, 4)
    u, v = jr.normal(ku, (d,)), jr.normal(kv, (d,))
    v = v + 0.8 * u  # not orthogonal
    c = jnp.cumsum(jr.normal(kc, (t, 2)), axis=0)
    c = c - c[-1]
    final = jr.normal(kf, (d,))
    return final + c @ jnp.stack([u, v]), jnp.stack([u, v]), c, final


def test_pca_of_a_planar_trajectory_recovers_the_plane(getkey):
    traj, plane, _, final = _planar_trajectory(getkey())
    pca = so.slices.pca_directions(traj)
    np.testing.assert_allclose(_principal_cosines(pca.directions, plane), 1.0, atol=1e-12)
    np.testing.assert_allclose(pca.directions @ pca.directions.T, jnp.eye(2), atol=1e-13)
    np.testing.assert_allclose(jnp.sum(pca.explained_variance_ratio), 1.0, rtol=1e-12)
    assert pca.explained_variance_ratio[0] >= pca.explained_variance_ratio[1]
    np.testing.assert_array_equal(pca.center, final)


def test_projected_trajectory_losses_match_the_slice(getkey):
    prob, _, _, _ = _quadratic(getkey(), lams=(3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 1.0, 2.0, 0.3, 0.9, 1.1, 4.0))
    traj, plane, c, final = _planar_trajectory(getkey())
    proj = so.slices.project_trajectory(prob, final, plane, traj)
    np.testing.assert_allclose(proj.coords, c, rtol=1e-10, atol=1e-10)  # least squares, not dot products
    assert np.max(proj.residual) < 1e-10 and np.max(proj.relative_residual) < 1e-12
    np.testing.assert_allclose(proj.loss_projected, proj.loss, rtol=1e-11)
    # the slice itself at the projected coordinates
    for i in (0, 7, 20):
        z = so.loss_slice(prob, final, plane, grid=(proj.coords[i, :1], proj.coords[i, 1:]))
        np.testing.assert_allclose(z[0, 0], proj.loss[i], rtol=1e-11)
    # a path off the plane: residual = the component orthogonal to it
    off = jr.normal(getkey(), final.shape)
    off = off - jnp.linalg.lstsq(plane.T, off)[0] @ plane
    p2 = so.slices.project_trajectory(prob, final, plane, traj + off)
    np.testing.assert_allclose(p2.coords, c, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(p2.residual, jnp.linalg.norm(off), rtol=1e-10)
    dist = jnp.linalg.norm(traj + off - final, axis=1)
    np.testing.assert_allclose(p2.relative_residual, jnp.linalg.norm(off) / dist, rtol=1e-10)
    assert np.max(np.abs(p2.loss - p2.loss_projected)) > 1e-3


# ----------------------------------------------------------------------------- interpolation
def test_barrier_between_the_double_well_minima():
    prob = so.landscapes.double_well(barrier=1.3, curvature=2.0, dim=3, transverse=[1.0, 5.0])
    m = prob.info["minima"]
    it = so.slices.interpolation(prob, m[0], m[1], n_points=101)  # α = ½ is on the grid
    np.testing.assert_allclose(it.barrier, prob.info["barrier"], rtol=1e-12)
    np.testing.assert_allclose(it.location, 0.5, atol=1e-12)
    np.testing.assert_allclose(it.losses[jnp.array([0, -1])], 0.0, atol=1e-12)
    # an even grid misses the saddle by half a cell: L(α) ≈ h − ½|L''| (α − ½)², L'' = −κ/2 (2a)²
    n = 100
    it = so.slices.interpolation(prob, m[0], m[1], n_points=n)
    a = float(prob.info["half_width"])
    slack = 0.5 * (2.0 / 2 * (2 * a) ** 2) * (0.5 / (n - 1)) ** 2
    assert 0 < float(prob.info["barrier"] - it.barrier) <= 1.01 * slack
    assert abs(float(it.location) - 0.5) <= 0.5 / (n - 1) + 1e-12


# ----------------------------------------------------------------------------- densities
def test_density_of_positions_is_the_histogram(getkey):
    d = 5
    theta = jr.normal(getkey(), (d,))
    plane = jr.normal(getkey(), (2, d))
    c = 0.7 * jr.normal(getkey(), (400, 2))
    pts = theta + c @ plane
    grid = (jnp.linspace(-2.0, 2.0, 9), jnp.linspace(-1.5, 1.5, 7))
    dens = so.slices.path_density(pts, theta, plane, grid=grid)
    e1 = np.concatenate([[-2.25], np.linspace(-1.75, 1.75, 8), [2.25]])
    e2 = np.concatenate([[-1.75], np.linspace(-1.25, 1.25, 6), [1.75]])
    h, _, _ = np.histogram2d(np.asarray(c[:, 0]), np.asarray(c[:, 1]), bins=(e1, e2))
    np.testing.assert_allclose(dens.density[0] * 0.5 * 0.5 * 400, h, atol=1e-9)
    np.testing.assert_allclose(dens.fraction_inside[0], h.sum() / 400)
    assert float(dens.mean_relative_residual[0]) < 1e-12
    kde = so.slices.path_density(pts, theta, plane, grid=(jnp.linspace(-6, 6, 61),) * 2, bandwidth=0.3)
    np.testing.assert_allclose(kde.fraction_inside[0], 1.0, atol=1e-3)


def test_density_of_an_ensemble_at_chosen_times(getkey):
    prob = so.landscapes.quadratic(jnp.diag(jnp.array([1.0, 2.0])))
    dyn = so.SGDSDE(prob, 0.1, 1, so.IsotropicNoise(1.0))
    ens = so.simulate(dyn, jnp.zeros(2), key=getkey(), n_paths=300, n_steps=40, save_every=10)
    grid = (jnp.linspace(-1.0, 1.0, 11),) * 2
    dens = so.slices.path_density(ens, jnp.zeros(2), jnp.eye(2), grid=grid, times=[1.0, 4.0])
    np.testing.assert_allclose(dens.times, [1.0, 4.0], rtol=1e-12)
    assert dens.density.shape == (2, 11, 11)
    direct = so.slices.path_density(ens.ys[:, 1], jnp.zeros(2), jnp.eye(2), grid=grid)
    np.testing.assert_array_equal(dens.density[0], direct.density[0])
    with pytest.raises(ValueError, match="2-D slice"):
        so.slices.path_density(ens, jnp.zeros(2), jnp.eye(2)[:1], grid=grid[:1])


# ----------------------------------------------------------------------------- results and plots
def test_results_save_load_and_plot(tmp_path, getkey):
    plt = pytest.importorskip("matplotlib.pyplot")
    prob, q, _, minimum = _quadratic(getkey())
    g = jnp.linspace(-1.0, 1.0, 6)
    sl = so.slices.landscape_slice(prob, minimum, q[:, :2].T, grid=(g, g))
    so.save(tmp_path / "slice", sl)
    back, _ = so.load(tmp_path / "slice")
    np.testing.assert_array_equal(back.losses, sl.losses)
    traj = minimum + jnp.linspace(1.0, 0.0, 8)[:, None] * (0.5 * q[:, 0] + 0.3 * q[:, 1])
    proj = so.slices.project_trajectory(prob, minimum, sl.directions, traj)
    it = so.slices.interpolation(prob, minimum - q[:, 0], minimum + q[:, 0], n_points=11)
    dens = so.slices.path_density(traj, minimum, sl.directions, grid=sl.grid)
    for ax in (so.plot.slice_contour(sl), so.plot.slice_contour(sl, filled=True, projection=proj),
               so.plot.slice_surface(sl), so.plot.interpolation(it), so.plot.slice_density(dens, sl)):
        assert ax is not None
    line = so.slices.landscape_slice(prob, minimum, q[:, :1].T, grid=(g,))
    assert so.plot.interpolation(line) is not None
    with pytest.raises(ValueError, match="2-D Slice"):
        so.plot.slice_contour(line)
    plt.close("all")
