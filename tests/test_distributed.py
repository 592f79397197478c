"""Multi-process runs on jax.distributed: two local CPU processes (gloo collectives) split
the chunks of paths between them; every process receives the whole result, bit for bit the
one a single process computes (paths are keyed by their index, not by who runs them), and
a checkpoint the two processes wrote together is resumed by one."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from distributed_cases import run_cases

import sde_opt as so

WORKER = Path(__file__).parent / "workers" / "distributed_run.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    address = f"localhost:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    outs = [tmp / f"p{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), address, "2", str(i), str(outs[i]), str(tmp / "ckpt")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two-process run did not finish in 240 s")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [dict(np.load(o)) for o in outs], tmp / "ckpt"


def test_two_processes_equal_one_process_bit_for_bit(two_processes):
    results, _ = two_processes
    one = run_cases()
    for name, ref in one.items():
        for pid, res in enumerate(results):
            assert res[name].shape == ref.shape, (name, pid)
            np.testing.assert_array_equal(res[name], ref, err_msg=f"{name} on process {pid}")
    assert one["exited"].any() and not one["diverged"].any()


def test_checkpoint_written_by_two_processes_resumes_in_one(two_processes):
    _, ckpt = two_processes
    files = sorted(ckpt.glob("chunk-*.npz"))
    # five chunks of 16 paths, computed round-robin: 0, 2, 4 by process 0 and 1, 3 by process 1
    assert [int(np.load(f)["process"]) for f in files] == [0, 1, 0, 1, 0]
    well = so.landscapes.double_well(barrier=0.25, curvature=2.0)
    sde = so.SGDSDE(well, lr=0.1, batch_size=1, noise=so.IsotropicNoise(2.0))
    region = so.HalfSpace(jnp.array([1.0]), 0.0)
    resumed = so.first_exit(sde, well.info["minima"][0], region, key=jr.key(4), n_paths=70, max_steps=3000,
                            chunk_size=16, checkpoint=ckpt)
    np.testing.assert_array_equal(np.asarray(resumed.times), run_cases()["times"])
