"""One process of the two-process run of tests/test_distributed.py.

Usage: python distributed_run.py <coordinator host:port> <n processes> <process id> <out.npz> <checkpoint dir>
Starts jax.distributed on localhost with CPU collectives (gloo), runs the engine's entry
points with the paths split over the processes, and writes what this process received.
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
address, n_proc, pid, out, ckpt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
jax.distributed.initialize(address, num_processes=n_proc, process_id=pid)

import numpy as np  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from distributed_cases import run_cases  # noqa: E402

assert jax.process_count() == n_proc and jax.process_index() == pid
np.savez(out, **run_cases(ckpt))
jax.distributed.shutdown()
