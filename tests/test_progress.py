"""Progress bars (tqdm): on when asked, off when asked, off by default where no one watches
(a pipe, CI), and a clear error for anything else."""

import jax.numpy as jnp
import jax.random as jr
import pytest

import sde_opt as so

SDE = so.SGDSDE(so.landscapes.quadratic(jnp.eye(2)), lr=0.1, batch_size=1, noise=so.HessianNoise())


def _run(**kw):
    return so.simulate(SDE, jnp.ones(2), key=jr.key(0), n_paths=40, n_steps=10, chunk_size=10, **kw)


def test_bar_when_asked_and_silent_otherwise(capfd):
    _run(progress=True)
    err = capfd.readouterr().err
    assert "SGDSDE paths" in err and "100%" in err and "400/400" in err  # 40 paths x 10 steps
    _run(progress=False)
    _run()  # auto: stderr is not a terminal under pytest
    assert capfd.readouterr().err == ""


def test_study_bar_counts_points(capfd):
    so.experiments.escape_vs_sharpness([1.0, 2.0], key=jr.key(0), n_paths=16, max_steps_cap=200, progress=True)
    err = capfd.readouterr().err
    assert "escape vs sharpness (hessian)" in err and "2/2" in err


def test_bad_progress_value():
    with pytest.raises(ValueError, match="progress must be None"):
        _run(progress="yes")
