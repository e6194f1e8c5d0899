import json
import math

import numpy as np
import pytest

from robustjax import report


def test_to_jsonable_and_table(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": (np.inf, float("nan")), "d": np.bool_(True)}
    p = report.write_json(tmp_path / "x.json", obj)
    assert json.loads(p.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": ["inf", "nan"], "d": True}
    t = report.markdown_table([{"m": "cw", "d": 0.123456, "n": 1000, "ok": True}, {"m": "df", "d": math.inf}])
    assert t.splitlines()[0] == "| m | d | n | ok |"
    assert "| cw | 0.1235 | 1,000 | yes |" in t and "| df | inf | - | - |" in t
    md = report.render("R", [report.Section("S", "text", [t], ["fig.png"])])
    assert "## S" in md and "![fig](fig.png)" in md


def test_json_round_trip_keeps_the_numbers(tmp_path):
    """What the report writes reads back as the same numbers, non-finite ones included, at full precision."""
    rng = np.random.default_rng(0)
    radii = rng.random(5).astype(np.float32)
    obj = {"radius": radii, "attack": np.array([0.5, np.inf, -np.inf]), "row": {"median": np.float64(np.pi),
           "nested": [np.nan, np.int64(7)]}, "name": "cw", "shape": (28, 28, 1)}
    back = report.read_json(report.write_json(tmp_path / "r.json", obj))
    assert back["radius"] == [float(v) for v in radii]               # float32 -> float exactly, no rounding
    assert back["attack"] == [0.5, math.inf, -math.inf] and back["row"]["median"] == math.pi
    assert math.isnan(back["row"]["nested"][0]) and back["row"]["nested"][1] == 7
    assert back["name"] == "cw" and back["shape"] == [28, 28, 1]


@pytest.mark.parametrize("value,cell", [(0.0, "0"), (1234567.0, "1.235e+06"), (1e-6, "1.000e-06"), (0.00123, "0.00123"),
                                        (-2.5, "-2.5"), (12345, "12,345"), (np.int32(-3), "-3"), (None, "-"),
                                        (np.bool_(False), "no"), (float("nan"), "nan"), (-math.inf, "-inf")])
def test_fmt_cells(value, cell):
    assert report.fmt(value) == cell


def test_markdown_table_cells_parse_back():
    rows = [{"eps": e, "robust": r} for e, r in zip([0.0, 0.5, 1.0], [0.9, 0.4125, 0.0])]
    lines = report.markdown_table(rows).splitlines()
    assert lines[1] == "|---|---|" and len(lines) == 2 + len(rows)
    parsed = [[float(c) for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert parsed == [[0.0, 0.9], [0.5, 0.4125], [1.0, 0.0]]
    assert report.markdown_table([]) == "(no rows)\n"
