"""The public surface: outside the package only public names are used, the top level is the
spine plus the contract names of DESIGN.md, and every topic submodule exports what it lists."""

import importlib
import pathlib
import re
import types

import pytest

import sde_opt as so

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTSIDE = ("notebooks", "paper_figs", "benchmarks", "tests")
SUBMODULES = ("curvature", "escape", "experiments", "landscapes", "optimizers", "plot", "problems", "saddles", "slices",
              "stability",
              "theory")

CONTRACT = (
    "Problem", "IsotropicNoise", "ConstantNoise", "HessianNoise", "MinibatchNoise", "GradientFlow", "SGDSDE", "SGD",
    "NoisyGD", "OptaxDynamics", "simulate", "first_exit", "escape_rate", "stability_radius",
    "ou_stationary_covariance", "hessian_eigs", "hessian_trace", "noise_eigs", "landscapes", "loss_slice",
    "filter_normalize",
)

# a private module or name reached from outside the package: an import of a module whose name starts
# with an underscore (by any of the import forms), or an attribute such as so._x or so.problems._x
PRIVATE = re.compile(
    r"(from\s+sde_opt(\.\w+)*\s+import\s+\(?\s*_\w)|(import\s+sde_opt(\.\w+)*\._)|\b(sde_opt|so)(\.[a-z]\w*)*\._[a-z]\w*"
)
SO_NAME = re.compile(r"\bso\.([A-Za-z]\w*)")


def _files():
    for folder in OUTSIDE:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".ipynb") and ".ipynb_checkpoints" not in path.parts:
                yield path
    yield ROOT / "sde_opt" / "demo.py"


def test_no_private_imports_outside_the_package():
    offenders = []
    for path in _files():
        text = path.read_text()
        if path.name == "test_public_api.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in PRIVATE.finditer(text)
                      if not (path.name == "demo.py" and m.group(0).startswith("from ."))]
    assert not offenders, "private sde_opt names used outside the package:\n" + "\n".join(offenders)


def test_every_top_level_name_used_outside_exists():
    missing = sorted({f"{p.relative_to(ROOT)}: so.{n}" for p in _files() if p.name != "test_public_api.py"
                      for n in SO_NAME.findall(p.read_text()) if not hasattr(so, n)})
    assert not missing, "names that are not at the top level of sde_opt:\n" + "\n".join(missing)


def test_top_level_is_the_spine_and_the_contract():
    names = [n for n in dir(so) if not n.startswith("_")]
    assert all(hasattr(so, n) for n in CONTRACT)
    assert set(SUBMODULES) <= set(names)
    assert len(names) <= 70, f"{len(names)} top-level names; put new ones in a topic submodule"


@pytest.mark.parametrize("sub", SUBMODULES)
def test_submodules_export_what_they_list(sub):
    mod = importlib.import_module(f"sde_opt.{sub}")
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"sde_opt.{sub}.__all__ lists {name} but it does not exist"
        assert not name.startswith("_")


def test_a_moved_name_says_where_it_went():
    with pytest.raises(AttributeError, match=r"sde_opt\.theory\.kramers_rate"):
        so.kramers_rate  # noqa: B018
    with pytest.raises(AttributeError, match=r"sde_opt\.plot\.spectral_density"):
        so.plot_spectral_density  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute"):
        so.no_such_name  # noqa: B018


def test_importing_the_core_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, sde_opt; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_submodules_are_modules():
    for sub in SUBMODULES:
        assert isinstance(getattr(so, sub), types.ModuleType)


def test_all_lists_the_top_level():
    assert sorted(so.__all__) == sorted(n for n in dir(so) if not n.startswith("_"))
