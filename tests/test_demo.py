"""`make demo` runs `python -m sde_opt.demo`; here with few paths, into a temporary folder."""

import json
import subprocess
import sys

import numpy as np

import sde_opt as so


def test_demo_writes_figure_data_and_table(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "sde_opt.demo", "--out", str(out), "--n-paths", "60", "--fast"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "escape_sharpness.png").stat().st_size > 10_000
    meta = json.loads((out / "escape_sharpness.json").read_text())
    assert meta["config"]["n_paths"] == 60 and meta["sde_opt_version"]
    result, _ = so.load(out / "escape_sharpness")
    assert isinstance(result, so.experiments.EscapeHeadline)
    assert result.hessian.mean_time.shape == (3,) and np.all(np.isfinite(result.hessian.exact))
    assert "slope of log tau" in res.stdout and "Kramers" in res.stdout
