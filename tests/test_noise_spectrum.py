"""The noise spectrum through the Gram trick and by streaming, against the dense
D = MinibatchNoise().covariance (float64)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from curvature_helpers import count_compiles, dense_noise

import sde_opt as so


@pytest.fixture(scope="module")
def mlp():
    """d = 160 parameters > N = 40 examples: the Gram matrix is the smaller side."""
    prob = so.problems.mlp_digits(key=jr.key(5), hidden=(2,), n_examples=40)
    p = prob.theta0 + 0.3 * jr.normal(jr.key(6), prob.theta0.shape)
    return prob, p, np.asarray(dense_noise(prob, p))


@pytest.fixture(scope="module")
def regression():
    """d = 6 < N = 50: D itself is the smaller side."""
    prob = so.problems.linear_regression(key=jr.key(2), n_examples=50, dim=6)
    p = prob.info["minima"][0] + 0.1
    return prob, p, np.asarray(dense_noise(prob, p))


def check_top(vals, vecs, dense, k, rtol=1e-8):
    ref_vals, ref_vecs = np.linalg.eigh(dense)
    ref_vals, ref_vecs = ref_vals[::-1][:k], ref_vecs[:, ::-1][:, :k]
    np.testing.assert_allclose(vals, ref_vals, rtol=rtol)
    np.testing.assert_allclose(np.abs(np.sum(np.asarray(vecs) * ref_vecs.T, axis=1)), 1.0, atol=1e-6)


@pytest.mark.parametrize("case", ["mlp", "regression"])
def test_gram_trick_matches_dense_eigh(case, request):
    prob, p, dense = request.getfixturevalue(case)
    k = 4
    vals, vecs = so.noise_eigs(prob, p, k)
    assert vals.shape == (k,) and vecs.shape == (k, dense.shape[0])
    check_top(vals, vecs, dense, k)


def test_streaming_matches_dense_eigh(mlp):
    """Lanczos on D·v over chunks of 7 examples (the last chunk padded and masked)."""
    prob, p, dense = mlp
    vals, vecs = so.noise_eigs(prob, p, 3, streaming=True, chunk_size=7)
    check_top(vals, vecs, dense, 3)


def test_noise_trace_and_operator(mlp):
    prob, p, dense = mlp
    assert float(so.curvature.noise_trace(prob, p)) == pytest.approx(np.trace(dense), rel=1e-12)
    assert float(so.curvature.noise_trace(prob, p, chunk_size=7)) == pytest.approx(np.trace(dense), rel=1e-12)
    v = jr.normal(jr.key(0), p.shape)
    mv = jax.jit(lambda p, v: [so.curvature.noise_operator(prob, p, chunk_size=c).mv(v) for c in (None, 7)])
    for out in mv(p, v):
        np.testing.assert_allclose(out, dense @ np.asarray(v), atol=1e-12)
    gc = so.curvature.centred_gradients(prob, p)
    np.testing.assert_allclose(gc.T @ gc / gc.shape[0], dense, atol=1e-12)


def test_noise_of_a_parameter_group(mlp):
    prob, p, dense = mlp
    start, size = so.curvature.parameter_groups(prob)["1/w"]
    block = dense[start : start + size, start : start + size]
    vals, vecs = so.noise_eigs(prob, p, 3, group="1/w")
    check_top(vals, vecs, block, 3)
    assert float(so.curvature.noise_trace(prob, p, group=(1, "w"))) == pytest.approx(np.trace(block), rel=1e-12)


def test_noise_estimators_compile_once_under_jit_and_vmap(regression):
    prob, p, _ = regression
    ps = p + 0.05 * jr.normal(jr.key(1), (3, p.shape[0]))
    for name, f in {
        "noise_eigs": lambda p: so.noise_eigs(prob, p, 2)[0],
        "noise_trace": lambda p: so.curvature.noise_trace(prob, p),
    }.items():
        f(ps[0])
        with count_compiles() as c:
            f(ps[1])
        assert c.n == 0, f"{name} recompiled: {c.names}"
        batched = jax.jit(jax.vmap(f))
        out = batched(ps)
        ps2 = ps + 0.01
        with count_compiles() as c:
            batched(ps2)
        assert c.n == 0, f"{name} recompiled under jit(vmap): {c.names}"
        ref = [f(q) for q in ps]
        np.testing.assert_allclose(out, np.stack(ref), rtol=1e-9)


def test_noise_bad_input(mlp, regression):
    prob, p, _ = mlp
    with pytest.raises(ValueError, match="at most N-1 nonzero eigenvalues.*k <= 39"):
        so.noise_eigs(prob, p, 45)
    with pytest.raises(ValueError, match="exceeds the dimension 6"):
        so.noise_eigs(regression[0], regression[1], 7)
    with pytest.raises(ValueError, match="does not exist"):
        so.noise_eigs(prob, p, 2, group="w")
    with pytest.raises(ValueError, match="needs a finite-sum problem"):
        so.noise_eigs(so.landscapes.quadratic(jnp.eye(2)), jnp.ones(2), 1)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        so.curvature.noise_trace(prob, p, chunk_size=0)
