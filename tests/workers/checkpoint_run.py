"""A long checkpointed run for tests/test_checkpoint.py to kill: python checkpoint_run.py <dir>."""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoint_cases import long_run  # noqa: E402

long_run(sys.argv[1])
