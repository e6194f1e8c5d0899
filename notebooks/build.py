"""Writes the notebooks from the cell lists in notebooks/_cells_*.py (source of truth, reviewable as
Python), so that every .ipynb here is regenerated, not hand-edited:

    python notebooks/build.py --execute     # what is committed: writes notebooks/0*.ipynb and runs them
    python notebooks/build.py --execute 03  # only the notebooks whose name starts with 03
    python notebooks/build.py               # sources only, no outputs (fast; the tests then fail)

--execute runs each notebook top to bottom in a fresh kernel in this folder with the small settings
(ROBUSTJAX_SMALL=1, which each notebook's first code cell reads), on the CPU, with the inline
matplotlib backend, so that every figure is stored as an image/png output, and saves it with its
outputs (about 2.5 CPU minutes for all four; 4-7 min wall on the shared 2-core machine). Volatile
metadata is left out (no execution timestamps; the kernel's Python version is dropped from the notebook
metadata) and cell ids are fixed, so a rebuild changes only the timings the notebooks print.
tests/test_notebooks.py executes the same way (`execute` below) and compares.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

# The settings a notebook is executed with, here and in tests/test_notebooks.py.
EXECUTE_ENV = {
    "ROBUSTJAX_SMALL": "1",
    "JAX_PLATFORMS": "cpu",   # the committed outputs are a CPU run, also on a machine with a GPU
    # ipykernel's default, stated so that an MPLBACKEND=Agg in the caller's environment does not turn every
    # plt.show() into a warning: the inline backend sends each figure as an image/png display_data output.
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
}
# tqdm.auto warns (to stderr, with the absolute path of the installed tqdm) when ipywidgets is missing; the
# notebooks show no progress bars, so the warning only made the stored outputs depend on the machine.
QUIET_WARNINGS = "ignore:IProgress not found"
# Figure resolution of the stored PNGs: matplotlib's default, stated so that a personal matplotlibrc does
# not change the committed files (the seven figures take about 0.3 MB). Passed to the inline backend's
# print_figure, i.e. only to the figures shown inline; lower it here if the notebooks grow.
FIGURE_DPI = 100
KERNEL_ARGS = ["--InlineBackend.print_figure_kwargs={'bbox_inches': 'tight', 'dpi': %d}" % FIGURE_DPI]


def cells_of(module_path: Path):
    spec = importlib.util.spec_from_file_location(module_path.stem, module_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NAME, mod.CELLS


def notebook_of(module_path: Path):
    """(name, notebook without outputs) from one cell list."""
    name, cells = cells_of(module_path)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, (kind, text) in enumerate(cells):
        text = text.strip("\n")
        make = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(make(text, id=f"{name[:2]}-{i:02d}"))  # stable ids: rebuilding changes nothing
    return name, nb


def execute(nb, cwd: Path = HERE, timeout: int = 600):
    """Runs `nb` in place in a fresh python3 kernel in `cwd` with EXECUTE_ENV; returns it, outputs stored
    and volatile metadata stripped. Raises nbclient's CellExecutionError on the first failing cell."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            extra_arguments=list(KERNEL_ARGS), resources={"metadata": {"path": str(cwd)}})
    warn = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), QUIET_WARNINGS) if w)
    client.execute(env={**os.environ, **EXECUTE_ENV, "PYTHONWARNINGS": warn})
    strip_volatile(nb)
    return nb


def strip_volatile(nb):
    """Drops what changes between runs without the code changing: execution timestamps in the cell
    metadata and the kernel's Python version (execution_count and outputs stay)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    info = nb.metadata.get("language_info")
    if info is not None:
        nb.metadata["language_info"] = {k: v for k, v in info.items() if k in ("name", "file_extension", "mimetype")}
    return nb


def build(module_path: Path, run: bool = False) -> Path:
    name, nb = notebook_of(module_path)
    out = HERE / f"{name}.ipynb"
    nbformat.write(nb, out)                  # the sources first: a failing execution leaves them written
    if run:
        nbformat.write(execute(nb), out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execute", action="store_true", help="run each notebook (small settings) and save its outputs")
    ap.add_argument("only", nargs="*", help="prefixes of the notebooks to build (default: all)")
    args = ap.parse_args(argv)
    for path in sorted(HERE.glob("_cells_*.py")):
        if args.only and not any(path.stem[len("_cells_"):].startswith(p) or cells_of(path)[0].startswith(p)
                                 for p in args.only):
            continue
        print(build(path, run=args.execute), flush=True)


if __name__ == "__main__":
    main()
