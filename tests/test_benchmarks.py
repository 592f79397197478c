"""The benchmark scripts run end to end at tiny sizes (``--fast``).

Only that they execute and report is checked: timings on a shared machine are noise, so no
test asserts a speed.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_ENABLE_X64="0", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )


def test_bench_engine_fast_runs_and_prints_ratios():
    out = _run("bench_engine.py", "--fast")
    assert out.returncode == 0, out.stderr[-3000:]
    ratios = [line for line in out.stdout.splitlines() if line.strip().startswith("ratios:")]
    assert len(ratios) == 2  # d = 2 and d = 100
    for line in ratios:
        assert "ours/bound" in line and "ours/VBT" in line and "ours/Unsafe" in line
    assert "| d | paths |" in out.stdout  # the markdown table
    assert "same law" in out.stdout


def test_bench_exit_fast_runs_and_prints_the_ratio():
    out = _run("bench_exit.py", "--fast", "--repeats", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "all exited: True" in out.stdout and "ratio (to horizon / early stop)" in out.stdout


def test_bench_curvature_fast_runs_and_reports_agreement():
    """Runs only where the ``bench`` extra (torch, PyHessian) is installed."""
    pytest.importorskip("torch")
    pytest.importorskip("pyhessian")
    out = _run("bench_curvature.py", "--fast")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| MLP | task | PyHessian | HVPs | sde_opt | HVPs | speed-up |" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 8 hidden")]
    assert len(rows) == 5  # top eigenvalue twice, trace twice (equal probes, equal standard error), density
    assert "| d=610 |" in out.stdout  # the agreement table
    assert "probes for Hutch++'s standard error" in out.stdout


def test_bench_slices_fast_runs_without_torch():
    """sde_opt's side only (``--no-torch``): the comparison with loss-landscapes needs torch."""
    out = _run("bench_slices.py", "--fast", "--no-torch", "--cases", "mlp")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| model | d | N | grid |" in out.stdout and "| mlp | 2,410 |" in out.stdout


def test_bench_networks_fast_runs_and_reports_every_task():
    """Runs only where the ``bench`` extra (torch, PyHessian, hessian-eigenthings) is installed."""
    pytest.importorskip("torch")
    pytest.importorskip("pyhessian")
    pytest.importorskip("hessian_eigenthings")
    out = _run("bench_networks.py", "--fast")
    assert out.returncode == 0, out.stderr[-3000:]
    for heading in ("## One Hessian-vector product", "## Top eigenvalue at equal accuracy",
                    "## Top eigenvalue with each library's defaults", "## Trace at equal standard error",
                    "## Density"):
        assert heading in out.stdout
    assert "Copied into torch: losses" in out.stdout
