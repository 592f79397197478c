"""Dropout with explicit keys: the discrete optimizers give every step of every path its own
dropout key, apart from the key that draws the batch; the finite sum, the curvature and the
SDE stay the deterministic evaluation network."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sde_opt as so
from sde_opt.optimizers import DROPOUT_STREAM

N, B, LR = 32, 8, 0.1


def _problem(p=0.5):
    kx, ky, km = jr.split(jr.key(0), 3)
    data = {"x": jr.normal(kx, (N, 3)), "y": jr.normal(ky, (N,))}
    model = eqx.nn.Sequential([eqx.nn.Linear(3, 16, key=km), eqx.nn.Lambda(jnp.tanh), eqx.nn.Dropout(p),
                               eqx.nn.Linear(16, 1, key=jr.fold_in(km, 1))])

    def loss(m, ex):  # evaluation mode: dropout off
        return 0.5 * (eqx.nn.inference_mode(m)(ex["x"])[0] - ex["y"]) ** 2

    def batch_loss(m, batch, key):  # training mode: one mask per example
        keys = jr.split(key, batch["x"].shape[0])
        out = jax.vmap(lambda x, k: m(x, key=k)[0])(batch["x"], keys)
        return jnp.mean(0.5 * (out - batch["y"]) ** 2)

    return so.Problem(loss, data, params=model, batch_loss_fn=batch_loss, batch_key=True), batch_loss


def test_sgd_step_uses_its_own_dropout_key():
    prob, batch_loss = _problem()
    sgd = so.SGD(prob, lr=LR, batch_size=B, replacement=False)
    ens = so.simulate(sgd, prob.theta0, key=jr.key(1), n_paths=3, n_steps=4)
    for i in range(3):  # the step by hand: batch from the step key, masks from its dropout stream
        theta = prob.theta0
        for j in range(4):
            k = jr.fold_in(jr.fold_in(jr.key(1), i), j)
            idx = jr.choice(k, N, (B,), replace=False)
            batch = jax.tree_util.tree_map(lambda x: x[idx], prob.data)
            g = jax.grad(lambda th: batch_loss(prob.model(th), batch, jr.fold_in(k, DROPOUT_STREAM)))(theta)
            theta = theta - LR * g
        np.testing.assert_allclose(np.asarray(ens.ys[i, -1]), np.asarray(theta), rtol=1e-10, atol=1e-12)


def test_paths_differ_by_their_masks_alone_and_p0_is_plain_sgd():
    prob, _ = _problem()
    full = so.SGD(prob, lr=LR, batch_size=N, replacement=False)  # every path sees the same batch
    ens = so.simulate(full, prob.theta0, key=jr.key(2), n_paths=2, n_steps=3)
    assert float(jnp.max(jnp.abs(ens.ys[0, -1] - ens.ys[1, -1]))) > 1e-4
    prob0, _ = _problem(p=0.0)
    gd = so.simulate(so.SGD(prob0, lr=LR, batch_size=N, replacement=False), prob0.theta0, key=jr.key(2),
                     n_paths=2, n_steps=3)
    theta = prob0.theta0
    for _ in range(3):
        theta = theta - LR * prob0.grad(theta)  # without dropout the step is full-batch GD of loss_fn
    np.testing.assert_allclose(np.asarray(gd.ys[:, -1]), np.broadcast_to(np.asarray(theta), (2, theta.size)),
                               rtol=1e-10, atol=1e-12)


def test_optax_ensemble_with_dropout_and_masks_from_the_key():
    prob, _ = _problem()
    dyn = so.OptaxDynamics(prob, optax.adam(1e-2), batch_size=B)
    ens = so.simulate(dyn, prob.theta0, key=jr.key(3), n_paths=2, n_steps=5)
    assert not bool(jnp.any(ens.diverged))
    idx = jnp.arange(B)
    g = [prob.batch_grad(prob.theta0, idx, k) for k in (jr.key(0), jr.key(0), jr.key(1))]
    np.testing.assert_array_equal(np.asarray(g[0]), np.asarray(g[1]))  # the same key, the same masks
    assert float(jnp.max(jnp.abs(g[0] - g[2]))) > 1e-6
    # the finite sum is the evaluation network: its gradient is the mean of the per-example ones
    np.testing.assert_allclose(np.asarray(prob.grad(prob.theta0)), np.asarray(prob.per_example_grads(prob.theta0).mean(0)),
                               rtol=1e-10)


def test_batch_key_needs_a_key_and_a_batch_loss():
    prob, _ = _problem()
    with pytest.raises(ValueError, match="takes a key"):
        prob.batch_grad(prob.theta0, jnp.arange(B))
    with pytest.raises(ValueError, match="batch_key=True"):
        so.Problem(lambda th, ex: jnp.sum(th), {"x": jnp.ones((4, 2))}, params=jnp.zeros(2), batch_key=True)
