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
    assert report.markdown_table([{"a": "x|y"}]).splitlines()[2] == "| x\\|y |"      # a | in a cell stays in it
    with pytest.raises(ValueError, match="Section.figures must be a list of strings"):
        report.Section("t", figures="ab.png")


# ----------------------------------------------------------------------------- verdicts (robustjax/verdicts.py)

from robustjax import verdicts  # noqa: E402


def _gr(method, err, radius, model="1HL-1024", lam=0.0, attack=1.0):
    return {"dataset": "mnist", "model": model, "method": method, "lambda": lam, "test_error": err,
            "certified_median": radius, "attack_median": attack}


def test_verdict_cross_lipschitz_flips_with_the_numbers():
    rows = [_gr("plain", 0.02, 0.30), _gr("weight_decay", 0.021, 0.32, lam=1e-4), _gr("dropout", 0.022, 0.35),
            _gr("cross_lipschitz", 0.025, 0.50, lam=1e-2)]
    assert verdicts.cross_lipschitz_beats({"rows": rows}).outcome == verdicts.HOLDS
    rows[2] = _gr("dropout", 0.022, 0.60)                        # dropout now certifies more
    v = verdicts.cross_lipschitz_beats({"rows": rows})
    assert v.outcome == verdicts.FAILS and "0.6" in v.line()
    rows[3] = _gr("cross_lipschitz", 0.05, 0.90, lam=1e-1)       # larger radius, but not at similar error
    assert verdicts.cross_lipschitz_beats({"rows": rows}).outcome == verdicts.UNTESTABLE


def test_verdict_kernel_and_region_and_spatial_flip():
    k = [_gr("kernel", 0.10, 0.4, model="gaussian_kernel", attack=1.2),
         _gr("kernel_cross_lipschitz", 0.11, 0.5, model="gaussian_kernel", lam=10.0, attack=2.5)]
    assert verdicts.kernel_distance_doubled({"rows": k}).outcome == verdicts.HOLDS
    k[1]["attack_median"] = 1.5                                   # 1.25 x: not roughly doubled
    assert verdicts.kernel_distance_doubled({"rows": k}).outcome == verdicts.FAILS
    k[0]["test_error"] = 0.67                                     # a kernel machine that does not classify
    assert verdicts.kernel_distance_doubled({"rows": k}).outcome == verdicts.UNTESTABLE
    ratios = [{"region l2 over": o, "points": 16, "median ratio": r, "region better on": 0.8}
              for o, r in (("cw", 0.95), ("deepfool", 0.9), ("ddn", 1.1))]
    assert verdicts.region_attack({"region_ratios": ratios}).outcome == verdicts.HOLDS
    ratios[0]["median ratio"] = 1.05
    assert verdicts.region_attack({"region_ratios": ratios}).outcome == verdicts.FAILS
    ratios[0]["points"] = 2
    assert verdicts.region_attack({"region_ratios": ratios}).outcome == verdicts.UNTESTABLE
    curve = lambda v: {"grid": {"robust_accuracy": {"0": 0.97, "0.5": 0.6, "1": v}}}  # noqa: E731
    sp = {"clean_accuracy_attacked": 0.97, "n_attacked": 100,
          "threats": {"rotation": curve(0.6), "translation": curve(0.5), "rotation+translation": curve(0.2)}}
    assert verdicts.spatial_breaks(sp).outcome == verdicts.HOLDS
    sp["threats"]["rotation+translation"] = curve(0.9)
    assert verdicts.spatial_breaks(sp).outcome == verdicts.FAILS
    sp["threats"]["rotation"] = {"grid": {"robust_accuracy": {}}}
    assert verdicts.spatial_breaks(sp).outcome == verdicts.UNTESTABLE     # an empty curve decides nothing


def test_verdict_landscape_flip():
    widths = {"N": 1_281_167, "rows": [
        {"model": "vgg11", "exceeds_N": True, "talk_exceeds": True},
        {"model": "resnet50", "exceeds_N": False, "talk_exceeds": False},
        {"model": "xception", "exceeds_N": True, "talk_exceeds": False}]}
    v = verdicts.widths({"widths": widths})
    assert v.outcome == verdicts.HOLDS and "xception" in v.line()
    widths["rows"][0]["exceeds_N"] = False
    assert verdicts.widths({"widths": widths}).outcome == verdicts.FAILS
    row = lambda variant, tr, te: {"arch": "vgg11", "act": "softplus", "variant": variant, "M": 8192,  # noqa: E731
                                   "n_train": 500, "train_accuracy": tr, "test_accuracy": te}
    skip = {"skip": {"rows": [row("skip_rand", 1.0, 0.69), row("skip_sgd", 1.0, 0.85)]}}
    assert verdicts.rand_zero_train_error(skip).outcome == verdicts.HOLDS
    assert verdicts.sgd_beats_rand(skip).outcome == verdicts.HOLDS
    skip["skip"]["rows"][1] = row("skip_sgd", 1.0, 0.60)
    assert verdicts.sgd_beats_rand(skip).outcome == verdicts.FAILS
    skip["skip"]["rows"][1] = row("skip_sgd", 0.93, 0.85)         # SGD did not fit its training set
    assert verdicts.sgd_beats_rand(skip).outcome == verdicts.UNTESTABLE
    skip["skip"]["rows"][0] = row("skip_rand", 0.998, 0.69)
    assert verdicts.rand_zero_train_error(skip).outcome == verdicts.FAILS


def test_verdict_ood_and_random_labels_flip():
    def m(err, u, lp):
        return {"test_error": err, "sets": {"uniform": {"mmc": u}, "lowpass": {"mmc": lp}}}
    ood = {"methods": {"plain": m(0.03, 0.8, 0.9), "ceda": m(0.03, 0.11, 0.12), "acet": m(0.035, 0.10, 0.10)}}
    assert verdicts.far_from_data(ood).outcome == verdicts.HOLDS
    ood["methods"]["ceda"] = m(0.03, 0.11, 0.7)
    assert verdicts.far_from_data(ood).outcome == verdicts.FAILS
    ood["methods"]["plain"] = m(0.03, 0.2, 0.2)
    assert verdicts.far_from_data(ood).outcome == verdicts.UNTESTABLE
    s = lambda tr, te: {"train_error": tr, "test_accuracy": te}  # noqa: E731
    rl = {"config": {"fit_threshold": 0.01},
          "settings": {"true_labels": s(0.0, 0.86), "random_labels": s(0.001, 0.11), "random_inputs": s(0.0, 0.098)}}
    assert verdicts.fits_random_labels(rl).outcome == verdicts.HOLDS
    rl["settings"]["random_labels"] = s(0.2, 0.11)                 # not fitted
    assert verdicts.fits_random_labels(rl).outcome == verdicts.FAILS


def test_all_verdicts_covers_every_claim_and_lines_carry_the_rule():
    vs = verdicts.all_verdicts({part: {} for part in verdicts.CLAIMS})
    assert len(vs) == sum(len(f) for f in verdicts.CLAIMS.values())
    assert all(v.outcome == verdicts.UNTESTABLE for v in vs)       # nothing to rest on: never "holds"
    assert all("Rule: " in v.line() and v.claim in v.line() for v in vs)
    with pytest.raises(ValueError):
        verdicts.Verdict("c", "probably", "r", {})
    with pytest.raises(ValueError, match=r"unknown parts \['landscpe'\]"):
        verdicts.all_verdicts({"landscpe": {}})


def test_a_verdict_resting_on_nan_is_not_testable():
    """A rule compared with NaN decides nothing: the kernel machine's NaN attack distance (a 'holds' by an inf
    ratio before) and a NaN in a list of numbers make the verdict 'not testable', with the reason in its rule."""
    k = [_gr("kernel", 0.10, 0.4, model="gaussian_kernel", attack=float("nan")),
         _gr("kernel_cross_lipschitz", 0.11, 0.5, model="gaussian_kernel", lam=10.0, attack=2.5)]
    v = verdicts.kernel_distance_doubled({"rows": k})
    assert v.outcome == verdicts.UNTESTABLE and "NaN, so not testable" in v.line()
    v = verdicts.Verdict("c", verdicts.HOLDS, "r.", {"accs": [0.9, float("nan")], "n": 3})
    assert v.outcome == verdicts.UNTESTABLE and v.rule == "r. (accs: NaN, so not testable.)"
    assert verdicts.Verdict("c", verdicts.FAILS, "r.", {"name": "x", "ok": True, "n": 3}).outcome == verdicts.FAILS
