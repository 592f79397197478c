"""Networks as they are written (Equinox, Flax linen, Flax nnx, plain pytrees) and data
streamed in chunks: every chunked result equals the unchunked one in float64 (N = 13 is
not a multiple of the chunk sizes), and jax.jit of any Problem method works."""

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_opt as so

N, CHUNKS = 13, (1, 4, 5)


def _data(key, n=N, d_in=4):
    kx, ky = jr.split(key)
    return {"x": jr.normal(kx, (n, d_in)), "y": jr.normal(ky, (n,))}


def _mlp_problem(key, chunk_size=None, width=6):
    """An Equinox MLP (tanh: its activation is a non-array leaf, kept static)."""
    model = eqx.nn.MLP(4, 1, width, 2, activation=jax.nn.tanh, key=key)
    loss = lambda m, ex: 0.5 * (m(ex["x"])[0] - ex["y"]) ** 2  # noqa: E731
    return so.Problem(loss, _data(jr.fold_in(key, 1)), params=model, chunk_size=chunk_size)


def _close(a, b, tol=1e-11):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- Equinox
def test_equinox_module_is_raveled_with_static_activation(getkey):
    key = getkey()
    prob = _mlp_problem(key)
    model = eqx.nn.MLP(4, 1, 6, 2, activation=jax.nn.tanh, key=key)
    params, _ = eqx.partition(model, eqx.is_inexact_array)
    flat, _ = jfu.ravel_pytree(params)
    _close(prob.theta0, flat, 0)
    theta = prob.theta0 + 0.1 * jr.normal(getkey(), flat.shape)
    m = prob.model(theta)
    assert isinstance(m, eqx.nn.MLP)
    ex = jax.tree_util.tree_map(lambda a: a[2], prob.data)
    _close(prob.example_loss(theta, ex), 0.5 * (m(ex["x"])[0] - ex["y"]) ** 2, 1e-14)
    want = jax.grad(lambda th: jnp.mean(jax.vmap(lambda e: 0.5 * (prob.model(th)(e["x"])[0] - e["y"]) ** 2)(prob.data)))(theta)
    _close(prob.grad(theta), want, 1e-13)


def test_jax_jit_of_every_method_works(getkey):
    prob = _mlp_problem(getkey(), chunk_size=5)
    th = prob.theta0
    v = jr.normal(getkey(), th.shape)
    _close(jax.jit(prob.loss)(th), prob.loss(th))
    _close(jax.jit(prob.grad)(th), prob.grad(th))
    _close(jax.jit(prob.hvp)(th, v), prob.hvp(th, v))
    _close(jax.jit(prob.per_example_grads)(th), prob.per_example_grads(th))
    plain = so.Problem(lambda p, ex: jnp.sum((ex["x"] @ p["w"] - ex["y"]) ** 2), _data(getkey()),
                       params={"w": jnp.zeros(4)})
    _close(jax.jit(plain.grad)(plain.theta0), plain.grad(plain.theta0))
    # eqx.filter_jit with the problem as an argument (no constants) still works
    _close(eqx.filter_jit(lambda p, t: p.grad(t))(prob, th), prob.grad(th))


def test_model_without_float_arrays_is_refused():
    with pytest.raises(ValueError, match="no floating-point arrays"):
        so.Problem(lambda m, ex: 0.0, {"x": jnp.ones((3, 1))}, params=eqx.nn.Lambda(jax.nn.relu))


def test_bad_chunk_size_raises():
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        so.Problem(lambda p, ex: jnp.sum(p), {"x": jnp.ones((3, 1))}, chunk_size=0)
    with pytest.raises(ValueError, match="needs data"):
        so.Problem(lambda p: jnp.sum(p), chunk_size=2)


# ----------------------------------------------------------------------------- chunks
def _conv_regression(n, chunk_size=None, size=16):
    """Least squares through a 3×3 convolution (``size``² × 3 images, 4 feature maps)."""
    kx, ky = jr.split(jr.key(11))
    data = {"x": jr.normal(kx, (n, size, size, 3)), "y": jr.normal(ky, (n,))}

    def loss(w, ex):
        out = jax.lax.conv_general_dilated(ex["x"][None], w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return 0.5 * (jnp.mean(jnp.tanh(out)) - ex["y"]) ** 2

    return so.Problem(loss, data, params=0.2 * jr.normal(jr.key(12), (3, 3, 3, 4)), chunk_size=chunk_size)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the automatic chunks are a CPU choice")
def test_convolutional_problems_stream_in_chunks_on_cpu(getkey):
    """chunk_size=None on CPU: a model whose convolutions over the data cost more than 1e8
    FLOPs streams in chunks of about 128 (at most 16 chunks), with the same results as one
    chunk; cheap convolutions, other models, N <= 128 and an explicit chunk_size are left
    as they are."""
    assert _conv_regression(2000).chunk_size == 125  # 2·256·4·27 = 55k FLOPs an image, 1.1e8 in all
    assert _conv_regression(128).chunk_size is None
    assert _conv_regression(2000, size=4).chunk_size is None  # 16 times cheaper: one chunk
    assert _conv_regression(3000).chunk_size == 188  # 16 chunks at most
    assert _conv_regression(2000, chunk_size=2000).chunk_size == 2000
    assert _mlp_problem(getkey()).chunk_size is None
    # the same numbers in chunks as in one (explicit chunks at a size cheap enough for the test)
    one, chunked = _conv_regression(300), _conv_regression(300, chunk_size=100)
    assert one.chunk_size is None  # 1.7e7 FLOPs of convolution in all: not worth chunks
    th, v = 0.1 * jr.normal(getkey(), (3, 3, 3, 4)).ravel(), jr.normal(getkey(), (108,))
    _close(chunked.loss(th), one.loss(th))
    _close(chunked.grad(th), one.grad(th))
    _close(chunked.hvp(th, v), one.hvp(th, v))
    noise = so.curvature.NoiseCovariance()
    _close(so.curvature.curvature_operator(chunked, th, curvature=noise).mv(v),
           so.MinibatchNoise().covariance(one, th) @ v)



@pytest.mark.parametrize("c", CHUNKS)
def test_chunked_problem_equals_unchunked(getkey, c):
    key = getkey()
    full, chunked = _mlp_problem(key), _mlp_problem(key, chunk_size=c)
    th = full.theta0 + 0.3 * jr.normal(getkey(), full.theta0.shape)
    v = jr.normal(getkey(), th.shape)
    z = jr.normal(getkey(), (N,))
    idx = jr.randint(getkey(), (7,), 0, N)
    _close(chunked.loss(th), full.loss(th))
    _close(chunked.grad(th), full.grad(th))
    _close(chunked.hvp(th, v), full.hvp(th, v))
    _close(chunked.per_example_losses(th), full.per_example_losses(th))
    _close(chunked.per_example_grads(th), full.per_example_grads(th))
    _close(chunked.batch_grad(th, idx), full.batch_grad(th, idx))
    g = full.per_example_grads(th)
    _close(chunked.per_example_vjp(th, z), g.T @ z)
    _close(chunked.per_example_jvp(th, v), g @ v)


@pytest.mark.parametrize("c", [4, 5])
def test_chunked_curvature_operators_equal_unchunked(getkey, c):
    key = getkey()
    full, chunked = _mlp_problem(key), _mlp_problem(key, chunk_size=c)
    th = full.theta0 + 0.3 * jr.normal(getkey(), full.theta0.shape)
    v = jr.normal(getkey(), th.shape)
    model_fn = lambda m, ex: m(ex["x"])  # noqa: E731
    out_loss = lambda zz, ex: 0.5 * (zz[0] - ex["y"]) ** 2  # noqa: E731
    curvatures = [so.curvature.Hessian(), so.curvature.EmpiricalFisher(), so.curvature.GaussNewton(model_fn, out_loss),
                  so.curvature.Fisher(model_fn, "gaussian"), so.curvature.NoiseCovariance()]
    g = full.per_example_grads(th)
    dense = {"EmpiricalFisher": g.T @ g / N, "NoiseCovariance": so.MinibatchNoise().covariance(full, th),
             "Hessian": full.hessian(th)}
    for curv in curvatures:
        a = so.curvature.curvature_operator(full, th, curvature=curv).mv(v)
        b = so.curvature.curvature_operator(chunked, th, curvature=curv).mv(v)
        _close(b, a)
        if type(curv).__name__ in dense:
            _close(a, dense[type(curv).__name__] @ v)
    # the Gauss-Newton of a squared error with a scalar output is Jᵀ J / N for the outputs' Jacobian
    jo = jax.vmap(lambda ex: jax.grad(lambda t: full.model(t)(ex["x"])[0])(th))(full.data)
    _close(so.curvature.curvature_operator(chunked, th, curvature=curvatures[2]).mv(v), jo.T @ (jo @ v) / N)
    # through the analyses: the spectra agree
    va, _ = so.hessian_eigs(full, th, 2, key=jr.key(0))
    vb, _ = so.hessian_eigs(chunked, th, 2, key=jr.key(0))
    _close(vb, va, 1e-9)
    na, _ = so.noise_eigs(full, th, 3)
    nb, _ = so.noise_eigs(chunked, th, 3)
    _close(nb, na, 1e-9)


def test_chunked_sgd_and_noise_paths_equal_unchunked(getkey):
    key = getkey()
    full, chunked = _mlp_problem(key), _mlp_problem(key, chunk_size=4)
    for make in (lambda p: so.SGD(p, 0.1, 6), lambda p: so.SGDSDE(p, 0.1, 6, so.MinibatchNoise())):
        a = so.simulate(make(full), full.theta0, key=jr.key(3), n_paths=3, n_steps=4)
        b = so.simulate(make(chunked), chunked.theta0, key=jr.key(3), n_paths=3, n_steps=4)
        _close(b.ys, a.ys, 1e-10)


# ----------------------------------------------------------------------------- Flax
def _linen_problem(key, chunk_size=None):
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Dense(5)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dense(1)(jnp.tanh(x))

    net = Net()
    data = _data(jr.fold_in(key, 1))
    variables = net.init(key, data["x"][:2])
    stats = jax.tree_util.tree_map(lambda a: a + 0.5, variables["batch_stats"])  # non-trivial running statistics
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),  # flax initialises in float32
                                       {"params": variables["params"], "batch_stats": stats})
    loss = lambda var, ex: 0.5 * (net.apply(var, ex["x"][None])[0, 0] - ex["y"]) ** 2  # noqa: E731

    def batch_loss(var, batch):  # training mode: the batch's statistics, updates discarded
        out, _ = net.apply(var, batch["x"], train=True, mutable=["batch_stats"])
        return jnp.mean(0.5 * (out[:, 0] - batch["y"]) ** 2)

    prob = so.Problem(loss, data, params=variables, chunk_size=chunk_size, batch_loss_fn=batch_loss)
    return prob, net, variables


def test_flax_linen_batchnorm_in_evaluation_mode(getkey):
    key = getkey()
    prob, net, variables = _linen_problem(key)
    flat, unravel = jfu.ravel_pytree(variables["params"])
    _close(prob.theta0, flat, 0)  # only the "params" collection is θ
    th = flat + 0.1 * jr.normal(getkey(), flat.shape)

    def direct(th):
        var = {"params": unravel(th), "batch_stats": variables["batch_stats"]}
        return jnp.mean(0.5 * (net.apply(var, prob.data["x"])[:, 0] - prob.data["y"]) ** 2)

    _close(prob.loss(th), direct(th), 1e-13)
    _close(prob.grad(th), jax.grad(direct)(th), 1e-12)
    _close(jax.jit(prob.grad)(th), prob.grad(th))
    # discrete optimizers in training mode: batch statistics of the mini-batch
    idx = jnp.array([0, 3, 3, 7, 12])
    batch = jax.tree_util.tree_map(lambda a: a[idx], prob.data)

    def train_loss(th):
        out, _ = net.apply({"params": unravel(th), "batch_stats": variables["batch_stats"]}, batch["x"], train=True,
                           mutable=["batch_stats"])
        return jnp.mean(0.5 * (out[:, 0] - batch["y"]) ** 2)

    _close(prob.batch_grad(th, idx), jax.grad(train_loss)(th), 1e-12)
    assert np.max(np.abs(prob.batch_grad(th, idx) - jax.grad(lambda t: jnp.mean(prob.chunk_losses(t, batch)))(th))) > 1e-6
    ens = so.simulate(so.SGD(prob, 0.1, 4), th, key=jr.key(0), n_paths=2, n_steps=3)
    assert np.all(np.isfinite(ens.ys))
    chunked, _, _ = _linen_problem(key, chunk_size=5)
    v = jr.normal(getkey(), th.shape)
    _close(chunked.hvp(th, v), prob.hvp(th, v))
    _close(chunked.per_example_grads(th), prob.per_example_grads(th))


def test_flax_nnx_module(getkey):
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 5, rngs=rngs)
            self.bn = nnx.BatchNorm(5, rngs=rngs)
            self.l2 = nnx.Linear(5, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.bn(self.l1(x))))

    net = Net(nnx.Rngs(0))
    net.eval()
    graphdef, state = nnx.split(net)
    net = nnx.merge(graphdef, jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), state))
    data = _data(getkey())
    loss = lambda m, ex: 0.5 * (m(ex["x"][None])[0, 0] - ex["y"]) ** 2  # noqa: E731
    prob = so.Problem(loss, data, params=net)
    _, params, _ = nnx.split(net, nnx.Param, ...)
    flat, _ = jfu.ravel_pytree(params)
    assert prob.dim == flat.shape[0] == (4 * 5 + 5) + 2 * 5 + (5 + 1)  # BatchNorm statistics are state, not θ
    direct = jnp.mean(0.5 * (net(data["x"])[:, 0] - data["y"]) ** 2)
    _close(prob.loss(prob.theta0), direct, 1e-13)
    chunked = so.Problem(loss, data, params=net, chunk_size=4)
    _close(jax.jit(chunked.grad)(prob.theta0), prob.grad(prob.theta0))


# ----------------------------------------------------------------------------- analyses
def test_equinox_mlp_through_the_analyses(getkey):
    """A chunked Equinox MLP through the curvature, noise and engine entry points (smoke
    test with small sizes; the values are checked against the unchunked problem where cheap)."""
    optax = pytest.importorskip("optax")
    key = getkey()
    prob, full = _mlp_problem(key, chunk_size=5), _mlp_problem(key)
    th = prob.theta0
    tr = so.hessian_trace(prob, th, key=jr.key(0), n_probes=8)
    _close(tr.value, so.hessian_trace(full, th, key=jr.key(0), n_probes=8).value, 1e-9)
    dens = so.curvature.hessian_density(prob, th, key=jr.key(0), n_probes=2, n_iter=10)
    assert np.all(np.isfinite(np.asarray(dens.nodes)))
    al = so.curvature.alignment(prob, th, key=jr.key(0), k=2, n_probes=4)
    _close(al.trace_d, so.curvature.alignment(full, th, key=jr.key(0), k=2, n_probes=4).trace_d, 1e-9)
    ens = so.simulate(so.OptaxDynamics(prob, optax.sgd(0.1), 4), th, key=jr.key(1), n_paths=2, n_steps=3)
    assert np.all(np.isfinite(ens.ys))
    dyn = so.SGDSDE(prob, 0.1, 4, so.MinibatchNoise())
    ex = so.first_exit(dyn, th, lambda t: jnp.linalg.norm(t - th) > 0.05, key=jr.key(2), n_paths=4, max_steps=20)
    assert ex.times.shape == (4,)
    rad = so.stability_radius(dyn, th, key=jr.key(3), delta=0.5, n_steps=5, n_paths=8)
    assert np.isfinite(float(rad.radius))


def test_subset_and_subsample(getkey):
    prob = _mlp_problem(getkey(), chunk_size=4)
    th = prob.theta0
    idx = jnp.array([1, 5, 6, 11, 12])
    sub = prob.subset(idx)
    assert sub.n_examples == 5 and sub.chunk_size == 4
    _close(sub.loss(th), jnp.mean(prob.per_example_losses(th)[idx]))
    _close(sub.grad(th), jnp.mean(prob.per_example_grads(th)[idx], axis=0))
    s2 = prob.subsample(7, key=jr.key(0))
    assert s2.n_examples == 7
    with pytest.raises(ValueError, match="n must be an integer"):
        prob.subsample(14, key=jr.key(0))
