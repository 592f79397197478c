"""Progress bars (tqdm) for anything that runs longer than a few seconds.

One rule for every loop of the package (the engine's chunks and host-loop steps, the
studies' sweeps): ``progress=None`` (the default) shows a bar only where someone is
watching, a terminal or a notebook, and only once the loop has run for
:data:`DELAY` seconds; ``False`` never; ``True`` always (on stderr). In a multi-process
run only process 0 draws. In a notebook the widget bar is used when ``ipywidgets`` is
installed, the text bar otherwise.
"""

from __future__ import annotations

import sys

import jax
from tqdm import std as _tqdm_std

# seconds a loop runs before its bar appears (short loops stay silent)
DELAY = 2.0


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and "IPKernelApp" in shell.get_ipython().config
    except Exception:
        return False


def _bar_class(notebook: bool):
    if notebook:
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
        except ImportError:
            pass
    return _tqdm_std.tqdm


def check_progress(progress):
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be None (auto), True or False, got {progress!r}.")
    return progress


def progress_bar(total: int, desc: str, progress=None, *, unit: str = "it", unit_scale: bool = False):
    """A tqdm bar of ``total`` units (use as a context manager, ``bar.update(n)``).
    ``progress``: ``None`` auto (terminal or notebook, after :data:`DELAY` s), ``True``,
    ``False``."""
    progress = check_progress(progress)
    notebook = _in_notebook()
    if progress is None:
        watching = notebook or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        enabled, delay = watching, DELAY
    else:
        enabled, delay = progress, 0.0
    enabled = enabled and jax.process_index() == 0
    cls = _bar_class(notebook and progress is not False)
    return cls(total=total, desc=desc, disable=not enabled, delay=delay, unit=unit, unit_scale=unit_scale,
               leave=True, dynamic_ncols=True)


class Progress:
    """A bar over the points of a sweep: ``Progress(total, label, progress)``, then
    ``.step(what)`` after each point (``what`` is shown beside the bar)."""

    def __init__(self, total: int, label: str, enabled=None):
        self.bar = progress_bar(total, label, enabled, unit="point")

    def step(self, what: str = ""):
        if what:
            self.bar.set_postfix_str(what, refresh=False)
        self.bar.update(1)
        if self.bar.n >= self.bar.total:
            self.bar.close()
