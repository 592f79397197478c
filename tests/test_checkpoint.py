"""Resumable runs: a run killed with SIGKILL at random points resumes, from its checkpoint
directory, to the result of an uninterrupted run bit for bit; temporary files are never
read; a directory written by another configuration is refused."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from checkpoint_cases import CHUNK, N_PATHS, long_run

import sde_opt as so

WORKER = Path(__file__).parent / "workers" / "checkpoint_run.py"
N_CHUNKS = N_PATHS // CHUNK


def _done(d: Path) -> int:
    return len(list(d.glob("chunk-*.npz")))


def _start(d: Path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, str(WORKER), str(d)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def uninterrupted():
    return long_run()


def test_killed_three_times_resumes_bit_for_bit(tmp_path, uninterrupted):
    ckpt = tmp_path / "run"
    rng = np.random.default_rng(0)
    targets = sorted(rng.choice(np.arange(1, N_CHUNKS - 2), size=3, replace=False))
    seen = []
    for target in targets:  # kill once `target` chunks are on disk, a random fraction into the next
        proc = _start(ckpt)
        t0 = time.monotonic()
        while _done(ckpt) < target:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() - t0 < 120, "the worker made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(_done(ckpt))
    assert seen == sorted(seen) and seen[-1] < N_CHUNKS, seen  # each kill interrupted the run
    for i in range(len(seen) - 1):
        assert seen[i] >= targets[i]
    # what a kill mid-write leaves behind (a temporary file) is never read as a result: plant a
    # complete but wrong one (a finished chunk's arrays doubled) under the name of the last,
    # missing chunk, and a half-written one
    last = ckpt / f"chunk-{(N_CHUNKS - 1) * CHUNK:012d}.npz"
    assert not last.exists()
    wrong = ckpt / f".tmp-{last.name}-1-dead"
    with np.load(ckpt / f"chunk-{0:012d}.npz") as z:
        np.savez(wrong, **{k: z[k] * 2 if z[k].dtype.kind == "f" else z[k] for k in z.files})
    Path(f"{wrong}.npz").rename(wrong)  # np.savez appended .npz
    assert wrong.exists()
    (ckpt / f".tmp-{last.name}-2-dead").write_bytes(b"PK\x03\x04 half a file")
    resumed = long_run(ckpt)
    assert _done(ckpt) == N_CHUNKS
    np.testing.assert_array_equal(np.asarray(resumed.ys), np.asarray(uninterrupted.ys))
    np.testing.assert_array_equal(np.asarray(resumed.diverged), np.asarray(uninterrupted.diverged))
    again = long_run(ckpt)  # everything from disk now
    np.testing.assert_array_equal(np.asarray(again.ys), np.asarray(uninterrupted.ys))


def test_other_configuration_is_refused(tmp_path):
    well = so.landscapes.double_well(barrier=0.25, curvature=2.0)
    sde = so.SGDSDE(well, lr=0.1, batch_size=1, noise=so.IsotropicNoise(2.0))
    kw = dict(n_paths=20, n_steps=10, chunk_size=10, checkpoint=tmp_path / "c")
    so.simulate(sde, jnp.array([-1.0]), key=jr.key(0), **kw)
    with pytest.raises(ValueError, match=r"different run \(key: "):
        so.simulate(sde, jnp.array([-1.0]), key=jr.key(1), **kw)
    with pytest.raises(ValueError, match="dynamics: .SGDSDE "):
        so.simulate(so.SGDSDE(well, lr=0.2, batch_size=1, noise=so.IsotropicNoise(2.0)), jnp.array([-1.0]),
                    key=jr.key(0), **kw)
    with pytest.raises(ValueError, match="start: .float64"):
        so.simulate(sde, jnp.array([-0.9]), key=jr.key(0), **kw)
    with pytest.raises(ValueError, match="n_steps: 10 there, 20 now"):
        so.simulate(sde, jnp.array([-1.0]), key=jr.key(0), **{**kw, "n_steps": 20})
    with pytest.raises(ValueError, match="observers"):
        so.first_exit(sde, jnp.array([-1.0]), so.HalfSpace(jnp.array([1.0]), 0.0), key=jr.key(0), n_paths=20,
                      max_steps=10, chunk_size=10, checkpoint=tmp_path / "c")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        so.simulate(sde, jnp.array([-1.0]), key=jr.key(0), **{**kw, "checkpoint": tmp_path / "file"})


def test_damaged_chunk_is_recomputed_with_a_warning(tmp_path):
    well = so.landscapes.double_well(barrier=0.25, curvature=2.0)
    sde = so.SGDSDE(well, lr=0.1, batch_size=1, noise=so.IsotropicNoise(2.0))
    kw = dict(key=jr.key(0), n_paths=20, n_steps=10, chunk_size=10, checkpoint=tmp_path / "c")
    ref = so.simulate(sde, jnp.array([-1.0]), **kw)
    (tmp_path / "c" / f"chunk-{10:012d}.npz").write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable"):
        again = so.simulate(sde, jnp.array([-1.0]), **kw)
    np.testing.assert_array_equal(np.asarray(again.ys), np.asarray(ref.ys))


def test_closures_and_lambdas_are_told_apart(tmp_path):
    """A loss closing over another constant, or another lambda, is another run."""
    data = {"x": jnp.ones((4, 2))}

    def run(c, f=None):
        f = f or (lambda th, ex: c * jnp.sum((ex["x"] @ th) ** 2))
        sde = so.SGDSDE(so.Problem(f, data, params=jnp.zeros(2)), lr=0.1, batch_size=1, noise=so.IsotropicNoise(1.0))
        return so.simulate(sde, jnp.ones(2), key=jr.key(0), n_paths=4, n_steps=3, checkpoint=tmp_path / "c")

    run(1.0)
    run(1.0)  # the same closure value: resumed
    with pytest.raises(ValueError, match="dynamics"):
        run(100.0)
    with pytest.raises(ValueError, match="dynamics"):
        run(1.0, lambda th, ex: jnp.sum(jnp.cos(ex["x"] @ th)))


def test_same_values_built_twice_resume(tmp_path):
    """The manifest sees values, not object identities or addresses: a problem built again
    (new objects, new closures) resumes the run; other values are refused."""
    def run(h, key=0):
        sde = so.SGDSDE(so.landscapes.quadratic(h), lr=0.1, batch_size=1, noise=so.HessianNoise())
        return so.simulate(sde, jnp.ones(2), key=jr.key(key), n_paths=8, n_steps=5, checkpoint=tmp_path / "q")

    a = run(jnp.eye(2))
    np.testing.assert_array_equal(np.asarray(run(jnp.eye(2)).ys), np.asarray(a.ys))
    with pytest.raises(ValueError, match="dynamics"):
        run(2 * jnp.eye(2))


def _scale_times(chunk_file: Path, factor: float):
    """Rewrite a chunk file with every float array scaled (exit times and positions)."""
    with np.load(chunk_file) as z:
        arrays = {k: z[k] * factor if z[k].dtype.kind == "f" else z[k] for k in z.files}
    np.savez(chunk_file, **arrays)


def test_study_sweep_caches_its_points(tmp_path):
    kw = dict(key=jr.key(3), n_paths=64, max_steps_cap=2000, checkpoint=tmp_path / "sweep", progress=False)
    first = so.experiments.escape_vs_sharpness([1.0, 2.0], **kw)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["point-000", "point-001"]
    np.testing.assert_array_equal(so.experiments.escape_vs_sharpness([1.0, 2.0], **kw).mean_time, first.mean_time)
    # the second point is read from disk, not computed again: doubling its stored exit times
    # doubles its mean escape time and leaves the first point alone
    for f in (tmp_path / "sweep" / "point-001").glob("chunk-*.npz"):
        _scale_times(f, 2.0)
    again = so.experiments.escape_vs_sharpness([1.0, 2.0], **kw)
    assert again.mean_time[0] == first.mean_time[0]
    np.testing.assert_allclose(again.mean_time[1], 2 * first.mean_time[1], rtol=1e-12)
    more = so.experiments.escape_vs_sharpness([1.0, 2.0, 3.0], **kw)  # a longer sweep adds the new point only
    np.testing.assert_array_equal(more.mean_time[:2], again.mean_time)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["point-000", "point-001", "point-002"]
