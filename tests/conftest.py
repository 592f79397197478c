"""Shared test set-up: float64 everywhere, fixed keys, and a table of landscapes with
known minima, Hessians and barriers (reused across test files)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import jax.random as jr
import pytest

import sde_opt as so


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module. Each XLA CPU executable keeps
    its own memory mappings, and a pytest worker that compiles a whole suite's functions
    passed the kernel's default limit of 65,530 mappings per process (vm.max_map_count) and
    segfaulted inside XLA's compiler; measured on three modules: 17,447 mappings without
    this, 1,374 with it, the same run time."""
    yield
    jax.clear_caches()


@pytest.fixture
def getkey():
    """Deterministic fresh keys: getkey() -> key(0), key(1), ... within one test."""
    count = iter(range(10**6))
    return lambda: jr.key(next(count))


@pytest.fixture(scope="session")
def conv_problem():
    """Least squares through a 3×3 convolution (16×16×3 images, 8 feature maps, 216 weights,
    16 examples): small enough for a dense Hessian, large enough (about 1e6 FLOPs of
    convolution per mini-batch gradient of 4) that on CPU its loops run from the host."""
    kx, ky = jr.split(jr.key(6))
    data = {"x": jr.normal(kx, (16, 16, 16, 3)), "y": jr.normal(ky, (16,))}

    def loss(w, ex):
        out = jax.lax.conv_general_dilated(ex["x"][None], w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return 0.5 * (jnp.mean(jnp.tanh(out)) - ex["y"]) ** 2

    return so.Problem(loss, data, params=0.2 * jr.normal(jr.key(7), (3, 3, 3, 8)))


@pytest.fixture(scope="session")
def tiny_conv_problem():
    """A least-squares model through a 1-D convolution (3 weights, 16 examples): its
    convolutions are too cheap (under 1e6 FLOPs) for the host loop."""
    kx, ky = jr.split(jr.key(6))
    data = {"x": jr.normal(kx, (16, 10)), "y": jr.normal(ky, (16,))}

    def loss(w, ex):
        out = jax.lax.conv_general_dilated(ex["x"][None, None, :], w[None, None, :], (1,), "VALID")
        return 0.5 * (jnp.sum(jnp.tanh(out)) - ex["y"]) ** 2

    return so.Problem(loss, data, params=jnp.full(3, 0.3))


def landscape_table():
    """(name, problem) pairs whose info holds exact minima and Hessians."""
    return [
        ("quadratic", so.landscapes.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]), jnp.array([1.0, -1.0]))),
        ("double_well_1d", so.landscapes.double_well(barrier=0.7, curvature=3.0)),
        ("double_well_3d", so.landscapes.double_well(barrier=1.0, curvature=2.0, dim=3, transverse=[1.0, 5.0])),
        ("sharp_flat", so.landscapes.sharp_flat(sharp=8.0, flat=1.0, barrier=0.5)),
        ("strict_saddle", so.landscapes.strict_saddle()),
        ("saddle_4d", so.landscapes.saddle(jnp.array([-2.0, -0.5, 1.0, 3.0]), quartic=2.0,
                                           basis=jnp.linalg.qr(jr.normal(jr.key(3), (4, 4)))[0])),
        ("styblinski_tang", so.landscapes.styblinski_tang(3)),
    ]


# ---------------------------------------------------------------- statistics helpers
# Tolerances in the tests are k standard errors computed from the sample itself.


def mean_and_se(x, axis=0):
    """Sample mean and its standard error ``s / sqrt(n)`` along ``axis``."""
    x = jnp.asarray(x)
    n = x.shape[axis]
    return jnp.mean(x, axis=axis), jnp.std(x, axis=axis, ddof=1) / jnp.sqrt(n)


def cov_and_se(x):
    """Sample covariance of ``x`` (n, d) and the entrywise standard error
    ``SE(Ŝᵢⱼ) = sqrt((m̂₄ᵢⱼ − Ŝᵢⱼ²) / n)`` with ``m̂₄ᵢⱼ = mean((xᵢ − x̄ᵢ)²(xⱼ − x̄ⱼ)²)``
    (the delta-method variance of a sample covariance, no normality assumed)."""
    x = jnp.asarray(x)
    n = x.shape[0]
    c = x - jnp.mean(x, axis=0)
    prod = c[:, :, None] * c[:, None, :]
    cov = jnp.sum(prod, axis=0) / (n - 1)
    se = jnp.std(prod, axis=0, ddof=1) / jnp.sqrt(n)
    return cov, se
