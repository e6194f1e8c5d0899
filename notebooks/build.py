"""Writes the notebooks from the cell lists in notebooks/_cells_*.py (source of truth, reviewable as
Python), so that every .ipynb here is regenerated, not hand-edited:

    python notebooks/build.py            # writes notebooks/0*.ipynb (no outputs)

Each notebook's first code cell reads ROBUSTJAX_SMALL=1 (set by the tests) to shrink its settings.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def cells_of(module_path: Path):
    spec = importlib.util.spec_from_file_location(module_path.stem, module_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NAME, mod.CELLS


def build(module_path: Path) -> Path:
    name, cells = cells_of(module_path)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, (kind, text) in enumerate(cells):
        text = text.strip("\n")
        make = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(make(text, id=f"{name[:2]}-{i:02d}"))  # stable ids: rebuilding changes nothing
    out = HERE / f"{name}.ipynb"
    nbformat.write(nb, out)
    return out


def main():
    for path in sorted(HERE.glob("_cells_*.py")):
        print(build(path))


if __name__ == "__main__":
    main()
