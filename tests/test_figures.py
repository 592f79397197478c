"""Every figure script runs end to end with --fast, writes its data and image, and the
data reloads with so.load; --plot-only re-plots from the saved data without recomputing."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import sde_opt as so

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "paper_figs").glob("*.py") if not p.name.startswith("_"))


def _run(script, *args, out):
    env = dict(os.environ, MPLBACKEND="Agg", SDE_OPT_FIG_OUT=str(out))
    env.pop("JAX_ENABLE_X64", None)  # figures run at the default float32, as users run them
    return subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_there_are_figures():
    assert {p.stem for p in SCRIPTS} >= {"xsin_lr", "stationary_covariance"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_figure_script_fast(script, tmp_path):
    proc = _run(script, "--fast", out=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = script.stem
    for suffix in (".npz", ".json", ".png"):
        path = tmp_path / f"{name}{suffix}"
        assert path.exists() and path.stat().st_size > 0, f"{path} missing"
    data, meta = so.load(tmp_path / name)
    assert meta["config"]["fast"] is True
    assert meta["key"] is not None and meta["sde_opt_version"] == so.__version__
    assert data
    leaves = jax.tree_util.tree_leaves(data)  # results are pytrees; nested ones too
    numeric = [np.asarray(v) for v in leaves if isinstance(v, (np.ndarray, jax.Array, float, int))
               and np.issubdtype(np.asarray(v).dtype, np.number)]
    # some figure data hold nan/inf on purpose (e.g. a theory outside its range); require real numbers somewhere
    assert any(np.isfinite(v).any() for v in numeric), "the figure data hold no finite numbers"

    png = tmp_path / f"{name}.png"
    png.unlink()
    proc = _run(script, "--plot-only", out=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert png.exists() and "computed in" not in proc.stdout


def test_plot_only_without_data_says_what_to_do(tmp_path):
    proc = _run(ROOT / "paper_figs" / "xsin_lr.py", "--plot-only", out=tmp_path)
    assert proc.returncode != 0
    assert "without --plot-only" in proc.stderr
