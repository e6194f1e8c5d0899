"""The notebooks run top to bottom with small settings (ROBUSTJAX_SMALL=1)."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))


def test_notebooks_are_built_from_their_cells():
    import importlib.util
    spec = importlib.util.spec_from_file_location("nb_build", NOTEBOOKS[0].parent / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for cells in sorted(NOTEBOOKS[0].parent.glob("_cells_*.py")):
        name, spec_cells = build.cells_of(cells)
        nb = nbformat.read(NOTEBOOKS[0].parent / f"{name}.ipynb", as_version=4)
        assert [c.source for c in nb.cells] == [t.strip("\n") for _, t in spec_cells], f"rebuild {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("ROBUSTJAX_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
