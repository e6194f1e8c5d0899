import json
import math

import numpy as np

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
