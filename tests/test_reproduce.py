"""The main job: `robustjax --quick` writes the whole report (every section, its figures, raw JSON)."""
import json
import sys

import pytest

from robustjax import cli
from robustjax.experiments import reproduce


def test_quick_report_has_every_section(tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["--quick", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for title in reproduce.TITLES.values():
        assert f"## {title}" in md, title
    for key in ("widths", "skip", "guarantees", "attacks", "spatial", "ood"):
        assert reproduce.TALK[key][:40] in md, key          # the talk's claim beside ours
    for part in reproduce.PARTS:
        assert (out / part / "results.json").is_file(), part
        json.loads((out / part / "results.json").read_text())
    for fig in ("attacks/adversarial_examples_p1_p2_pinf.png", "attacks/robust_accuracy_l2.png",
                "guarantees/cross_lipschitz_guarantees.png", "landscape/badnews.png", "ood/ood_alpha.png",
                "spatial/spatial_examples.png"):
        assert (out / fig).is_file() and f"({fig})" in md, fig
    assert "3,211,264" in md and "802,816" in md                 # widths computed from the models
    assert "| VGG11-skip (rand) |" in md
    attacks = json.loads((out / "attacks" / "results.json").read_text())
    names = {(r["attack"], r["p"]) for r in attacks["rows"]}
    assert {("region", 2), ("cw", 2), ("deepfool", 2), ("region", 1), ("region", "inf")} <= names
    timings = json.loads((out / "timings.json").read_text())
    assert set(reproduce.PARTS) <= set(timings)


def test_full_scale_refuses_without_gpu(capsys):
    if reproduce.has_gpu():
        pytest.skip("a GPU is present")
    assert cli.main(["--full", "--parts", "attacks", "--out", "/nonexistent/never"]) == 2
    assert "needs a GPU" in capsys.readouterr().err


def test_unknown_part_is_an_error():
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--parts", "wormholes"])
