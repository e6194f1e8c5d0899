"""The main job: `robustjax --quick` writes the whole report (every section, its figures, raw JSON), and
its numbers hold the invariants that must hold at any scale: certified radius <= attack distance,
robust accuracy non-increasing in eps and below the clean accuracy, probabilities and rates in [0, 1],
confidences at least 1/K, adversarial noise at least as confident as the noise it starts from, the
layer widths the architectures define, zero training error where the theory guarantees it. The quick job
runs once per module (a fixture shared by the asserts): its verdict lines must exist and be the ones
robustjax/verdicts.py computes from the report's numbers, and its one-hidden-layer nets must test at <= 3 %."""
import json
import math
import re

import pytest

from robustjax import cli, report, verdicts
from robustjax.experiments import reproduce

# the quick main job itself (minutes on 2 cores): the tests that read its report are marked main_job (run them
# with `pytest -m main_job tests/test_reproduce.py`); the others run in the default suite
main_job = pytest.mark.main_job

TOL = 1e-6
# M = max_k n_k of the width table, derived by hand from the architectures (as in tests/test_zoo.py)
WIDEST = {**{v: 224 * 224 * 64 for v in ("vgg11", "vgg13", "vgg16c", "vgg16", "vgg19")},
          "inception_v3": 147 * 147 * 64, "inception_v4": 147 * 147 * 64, "squeezenet": 111 * 111 * 96,
          "enet": 256 * 256 * 16, "googlenet": 112 * 112 * 64, "resnet50": 112 * 112 * 64,
          "xception": 147 * 147 * 128, "densenet121": 112 * 112 * 64}


def _prob(v, what):
    assert isinstance(v, float | int) and 0.0 <= v <= 1.0, (what, v)


def _check_landscape(r):
    w = r["widths"]
    for row in w["rows"]:
        assert row["M"] == WIDEST[row["model"]] == math.prod(row["shape"]), row
        assert row["exceeds_N"] == (row["M"] > w["N"]) and row["k"] >= 1, row
    assert {row["model"] for row in w["rows"] if row["exceeds_N"]} >= {"vgg11", "vgg16", "inception_v3"}
    rows = r["skip"]["rows"]
    assert rows
    for row in rows:
        _prob(row["train_accuracy"], row["model"])
        _prob(row["test_accuracy"], row["model"])
        if row["variant"] == "skip_rand":                # M >= N skip units: the least-squares fit interpolates
            assert row["M"] >= row["n_train"] and row["zero_train_error"] and row["train_accuracy"] == 1.0, row
    neuron, wide = r["badnews"]["neuron"], r["badnews"]["wide"]
    assert neuron["minima"] >= 2 and len(neuron["minima_losses"]) >= 2      # more than one local minimum ...
    assert min(neuron["minima_losses"]) == pytest.approx(neuron["global_min"])
    assert all(v >= neuron["global_min"] - TOL for v in neuron["restart_final_losses"])  # ... none below the global
    assert max(wide["final_losses"]) < 1e-2 * neuron["global_min"], wide   # the wide net fits from every start


def _check_guarantees(r):
    assert r["rows"]
    for row in r["rows"]:
        _prob(row["test_error"], row["method"])
        _prob(row["attack_success"], row["method"])
        assert row["certified_median"] >= 0 and row["global_median"] >= 0, row
        # per point certified radius / attack distance <= 1 (Theorem 2.1 is a lower bound), so its median too
        assert 0.0 <= row["tightness_median"] <= 1.0 + TOL, row
        if math.isfinite(row["attack_median"]) and row["tightness_median"] > 0:
            assert row["attack_median"] > 0, row


def _check_attacks(r):
    _prob(r["test_accuracy"], "test_accuracy")
    assert r["test_accuracy"] > 0.8, r["test_accuracy"]          # 2 epochs on 20000 images: about 0.95
    for row in r["rows"]:
        _prob(row["success"], row["attack"])
        assert row["median"] >= 0 and row["mean"] > 0 and row["ms_per_example"] > 0, row
    for row in r["region_ratios"]:
        assert row["points"] > 0 and row["median ratio"] > 0, row
        _prob(row["region better on"], row["region l2 over"])


def _check_spatial(r):
    acc = r["clean_accuracy_attacked"]
    _prob(acc, "clean accuracy")
    for threat, t in r["threats"].items():
        for method in ("grid", "first_order"):
            s = t[method]
            _prob(s["fooled_fraction"], (threat, method))
            curve = sorted((float(k), v) for k, v in s["robust_accuracy"].items())
            values = [v for _, v in curve]
            assert all(0.0 <= v <= 1.0 for v in values), (threat, method, curve)
            assert all(a >= b for a, b in zip(values, values[1:])), ("robust accuracy rises with eps", threat, curve)
            if curve[0][0] >= 0:
                assert values[0] <= acc + TOL, (threat, method, curve, acc)
            assert s["fooled_fraction"] >= 1.0 - acc - TOL, (threat, method)   # misclassified count as fooled
        assert t["first_order_fooled_where_grid_not"] >= 0 and t["grid_fooled_where_first_order_not"] >= 0


def _check_ood(r):
    k = 1.0 / 10
    for method, m in r["methods"].items():
        _prob(m["test_error"], method)
        assert k - TOL <= m["mmc_test"] <= 1.0, (method, m["mmc_test"])
        for name, s in m["sets"].items():
            assert k - TOL <= s["mmc"] <= 1.0, (method, name, s)
            _prob(s["auroc"], (method, name))
            _prob(s["fpr95"], (method, name))
        # adversarial noise keeps the most confident iterate, the low-pass start included
        assert m["sets"]["adversarial"]["mmc"] >= m["sets"]["lowpass"]["mmc"] - TOL, method
        a = m["alpha"]
        _prob(a["reached_fraction"], method)
        assert a["median_alpha"] >= 1.0 or a["reached_fraction"] < 0.5, a
        assert all(k - TOL <= c <= 1.0 for c in a["mean_conf"] + a["mean_conf_projected"]), a
        if a["curve_alphas"][0] == 1.0:                   # 1 * noise is in the box already: clipping changes nothing
            assert a["mean_conf"][0] == pytest.approx(a["mean_conf_projected"][0], rel=1e-5), a
    if {"plain", "acet"} <= set(r["methods"]):           # the paper's claim, by a wide margin at any scale
        assert r["methods"]["acet"]["sets"]["uniform"]["mmc"] < r["methods"]["plain"]["sets"]["uniform"]["mmc"]


def _check_random_labels(r):
    for name, s in r["settings"].items():
        _prob(s["train_error"], name)
        _prob(s["test_accuracy"], name)
        assert len(s["curve_test_accuracy"]) == len(s["epochs"]) == r["config"]["epochs"], name
        assert s["best_test_accuracy"] >= s["curve_test_accuracy"][-1] - TOL, name


CHECKS = {"landscape": _check_landscape, "random_labels": _check_random_labels, "guarantees": _check_guarantees,
          "attacks": _check_attacks, "spatial": _check_spatial, "ood": _check_ood}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """The folder of one `robustjax --quick` run, shared by every test of this module that reads it."""
    out = tmp_path_factory.mktemp("quick") / "report"
    assert cli.main(["--quick", "--out", str(out)]) == 0
    return out


@main_job
def test_quick_report_has_every_section(quick_report):
    out = quick_report
    md = (out / "report.md").read_text()
    for title in reproduce.TITLES.values():
        assert f"## {title}" in md, title
    for key in ("widths", "skip", "random_labels", "guarantees", "attacks", "spatial", "ood"):
        assert reproduce.TALK[key][:40] in md, key          # the talk's claim beside ours
    for part in reproduce.PARTS:
        assert (out / part / "results.json").is_file(), part
        CHECKS[part](report.read_json(out / part / "results.json"))
    for fig in ("attacks/adversarial_examples_p1_p2_pinf.png", "attacks/robust_accuracy_l2.png",
                "guarantees/cross_lipschitz_guarantees.png", "landscape/badnews.png", "ood/ood_alpha.png",
                "spatial/spatial_examples.png", "random_labels/random_labels.png"):
        assert (out / fig).is_file() and f"({fig})" in md, fig
    assert "3,211,264" in md and "802,816" in md                 # widths computed from the models
    assert "| VGG11-skip (rand) |" in md
    attacks = json.loads((out / "attacks" / "results.json").read_text())
    names = {(r["attack"], r["p"]) for r in attacks["rows"]}
    assert {("region", 2), ("cw", 2), ("deepfool", 2), ("region", 1), ("region", "inf")} <= names
    timings = json.loads((out / "timings.json").read_text())
    assert set(reproduce.PARTS) <= set(timings) and all(timings[k] > 0 for k in (*reproduce.PARTS, "total"))
    for part in reproduce.PARTS:                                    # each part's time is printed in the report
        assert f"{part} {timings[part]:.0f} s" in md, part
    # the markdown shows the JSON's numbers: the attacks table's test accuracy, the widths it computed
    assert re.search(rf"test accuracy {attacks['test_accuracy']:.4f}", md)
    assert sum(part in md for part in ("| 3,211,264 |", "| 802,816 |", "| 1,382,976 |")) == 3


@main_job
def test_quick_report_verdicts_are_computed(quick_report):
    """One verdict line per claim, in the report and in verdicts.json, equal to what verdicts.py computes
    from the parts' results.json now (so none can be typed in), each with its rule and its numbers."""
    md = (quick_report / "report.md").read_text()
    assert "## Verdicts: the talk's claims at this scale" in md
    written = {part: report.read_json(quick_report / part / "results.json") for part in reproduce.PARTS}
    recomputed = verdicts.all_verdicts(written)
    assert len(recomputed) == sum(len(fns) for fns in verdicts.CLAIMS.values())
    saved = json.loads((quick_report / "verdicts.json").read_text())
    assert [(v["claim"], v["outcome"]) for v in saved] == [(v.claim, v.outcome) for v in recomputed]
    for v in recomputed:
        assert v.outcome in verdicts.OUTCOMES and v.numbers, v
        assert f"- {v.line()}" in md, v.claim


@main_job
def test_quick_one_hidden_layer_nets_at_most_3_percent(quick_report):
    rows = report.read_json(quick_report / "guarantees" / "results.json")["rows"]
    one_hl = [r for r in rows if r["model"].startswith("1HL")]
    assert {r["method"] for r in one_hl} >= {"plain", "weight_decay", "dropout", "cross_lipschitz"}
    for r in one_hl:
        assert r["test_error"] <= 0.03, (r["method"], r["lambda"], r["test_error"])
    kernel = [r for r in rows if r["model"] == "gaussian_kernel"]
    assert kernel and all(r["test_error"] < 0.5 for r in kernel), kernel     # a kernel machine that classifies


def test_quick_report_invariants_catch_violations():
    """The checks above fail on a certificate above the attack, a rising robust-accuracy curve, a
    probability above 1 and adversarial noise less confident than its start."""
    row = {"test_error": 0.1, "attack_success": 1.0, "certified_median": 0.5, "global_median": 0.1,
           "tightness_median": 0.7, "attack_median": 1.0, "method": "cross_lipschitz"}
    _check_guarantees({"rows": [row]})
    with pytest.raises(AssertionError):
        _check_guarantees({"rows": [{**row, "tightness_median": 1.2}]})
    curve = {"grid": {"fooled_fraction": 0.5, "robust_accuracy": {"0": 0.9, "10": 0.5, "30": 0.2}},
             "first_order": {"fooled_fraction": 0.5, "robust_accuracy": {"0": 0.9, "10": 0.4, "30": 0.4}}}
    spatial = {"clean_accuracy_attacked": 0.9, "threats": {"rotation": {**curve, "first_order_fooled_where_grid_not": 0,
                                                                        "grid_fooled_where_first_order_not": 1}}}
    _check_spatial(spatial)
    curve["first_order"]["robust_accuracy"]["30"] = 0.45
    with pytest.raises(AssertionError, match="robust accuracy rises"):
        _check_spatial(spatial)
    sets = {n: {"mmc": 0.3, "auroc": 0.9, "fpr95": 0.2} for n in ("uniform", "lowpass", "adversarial")}
    m = {"test_error": 0.05, "mmc_test": 0.95, "sets": sets,
         "alpha": {"reached_fraction": 1.0, "median_alpha": 3.0, "curve_alphas": [1.0, 10.0], "mean_conf": [0.5, 0.9],
                   "mean_conf_projected": [0.5, 0.6]}}
    _check_ood({"methods": {"plain": m}})
    for broken in ({**sets, "adversarial": {"mmc": 0.2, "auroc": 0.9, "fpr95": 0.2}},
                   {**sets, "uniform": {"mmc": 0.3, "auroc": 1.5, "fpr95": 0.2}}):
        with pytest.raises(AssertionError):
            _check_ood({"methods": {"plain": {**m, "sets": broken}}})


def test_full_scale_refuses_without_gpu(capsys):
    if reproduce.has_gpu():
        pytest.skip("a GPU is present")
    assert cli.main(["--full", "--parts", "attacks", "--out", "/nonexistent/never"]) == 2
    assert "needs a GPU" in capsys.readouterr().err


def test_unknown_part_is_an_error():
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--parts", "wormholes"])


def test_quick_spatial_reuses_the_attacks_net():
    """At the quick scale the spatial part trains the attacks part's net (same config), so it is trained once:
    the two configs must stay equal (else the job silently trains it twice), and fit_shared returns the
    first part's net to the second."""
    from robustjax import data, train
    s = reproduce.ATTACK_SCALES["quick"]
    attacks_cfg = train.TrainConfig(model="mlp", model_config={"widths": s["widths"], "act": "relu"}, optimizer="adam",
                                    learning_rate=1e-3, schedule="piecewise", epochs=s["epochs"],
                                    train_size=s["train_size"], progress=False)
    c = reproduce._config("spatial", "main")
    spatial_cfg = train.TrainConfig(model=c["model"], model_config=dict(c["model_config"]), dataset=c["dataset"],
                                    optimizer=c["optimizer"], learning_rate=c["learning_rate"], schedule=c["schedule"],
                                    epochs=c["epochs"], batch_size=c["batch_size"], train_size=c["train_size"],
                                    seed=c["seed"], progress=False)
    assert reproduce._train_key(attacks_cfg) == reproduce._train_key(spatial_cfg)
    (xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
    tiny = train.TrainConfig(model="mlp", model_config={"widths": (8,), "act": "relu"}, optimizer="adam",
                             learning_rate=1e-3, epochs=1, batch_size=64, train_size=128, progress=False)
    reproduce._TRAINED.pop(reproduce._train_key(tiny), None)
    first = reproduce.fit_shared(tiny, (xtr, ytr), (xte[:100], yte[:100]))
    again = reproduce.fit_shared(tiny, (xtr, ytr), (xte[:100], yte[:100]))
    assert not first[3] and again[3] and again[0] is first[0] and again[1] == first[1]
    reproduce._TRAINED.pop(reproduce._train_key(tiny), None)


def test_quick_attack_settings_are_cut_only_where_no_verdict_rests():
    """The quick attack comparison keeps what the region-attack verdict needs (l2 against CW and DeepFool on
    at least 5 points, CW with its binary search) and cuts regions and restarts (passed to the attack, not
    changed in its defaults); the CPU and full scales keep the library's restarts in every norm and run l1 and
    l_inf (several times l2's cost per point) on a subset of the l2 points."""
    q = reproduce.ATTACK_SCALES["quick"]
    assert q["n_region"] >= 5 and q["n"] >= q["n_region"] and q["n_regions"] >= 10 and q["cw_steps"] >= 100
    assert q["restarts"] is not None and q["other"]["restarts"] == 0
    for scale in ("cpu", "full"):
        s = reproduce.ATTACK_SCALES[scale]
        assert s["restarts"] is None and s["other"]["restarts"] is None and s["other"]["n_regions"] >= s["n_regions"]
        assert 10 <= s["other"]["n_region"] <= s["n_region"]


def test_full_plan_states_every_part_with_gpu_hours(capsys):
    """`robustjax --full --plan` needs no GPU: every part with its estimated GPU-hours, setting and basis,
    and the total (the sum of the parts' ranges); it trains nothing and writes nothing."""
    assert set(reproduce.FULL_ESTIMATES) == set(reproduce.PARTS)
    assert cli.main(["--full", "--plan", "--out", "/nonexistent/never"]) == 0
    text = capsys.readouterr().out
    for part, e in reproduce.FULL_ESTIMATES.items():
        lo, hi = e["hours"]
        assert 0 < lo <= hi and e["basis"] and e["setting"], part
        assert re.search(rf"^  {part} +{re.escape(reproduce._hours(lo, hi))} GPU-hours", text, re.M), part
    lo = sum(e["hours"][0] for e in reproduce.FULL_ESTIMATES.values())
    hi = sum(e["hours"][1] for e in reproduce.FULL_ESTIMATES.values())
    assert re.search(rf"total +{re.escape(reproduce._hours(lo, hi))} GPU-hours \(estimate\)", text)
    assert "estimate" in text and "--resume" in text
    # the skip table's estimate rests on the 1.6 GPU-hours of steps measured in benchmarks/parallel.md
    assert "1.6 GPU-hours" in reproduce.FULL_ESTIMATES["landscape"]["basis"]
    assert cli.main(["--full", "--plan", "--parts", "landscape"]) == 0
    only = capsys.readouterr().out
    assert "landscape" in only and "attacks " not in only


def _fake_runners(monkeypatch, calls, fail=()):
    """Part runners that train nothing: each writes a results.json naming one figure, and the figure; the
    parts in `fail` raise after writing a partial results.json (as a killed part leaves one)."""
    from robustjax import report as rep

    def runner(part):
        def run(scale, out, **kw):
            calls.append((part, scale, kw))
            result = {"setting": f"fake {part} at {scale}", "figures": [f"{part}.png"]}
            if part in fail:
                rep.write_json(out / "results.json", {"setting": "half"})
                raise KeyboardInterrupt(part)
            (out / f"{part}.png").write_bytes(b"png")
            (out / f"{part}.md").write_text(f"| fake table of {part} |\n")
            rep.write_json(out / "results.json", result)
            return result
        return run
    monkeypatch.setattr(reproduce, "RUNNERS", {p: runner(p) for p in reproduce.PARTS})


def test_resume_reuses_finished_parts_and_reruns_the_others(tmp_path, monkeypatch, capsys):
    """--resume skips a part whose results.json, figures and completion record exist (reusing its results
    in the rebuilt report and verdicts), reruns one killed mid-way (results.json but no completion record)
    and one never started, and passes the landscape part its checkpoint folder OUT/landscape/ckpt."""
    out = tmp_path / "report"
    parts = "landscape,attacks,ood"
    calls = []
    _fake_runners(monkeypatch, calls, fail=("attacks",))
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--quick", "--parts", parts, "--out", str(out)])
    assert [c[0] for c in calls] == ["landscape", "attacks"]
    assert calls[0][2] == {}                       # the quick scale without --resume keeps no checkpoints
    assert (out / "landscape" / reproduce.DONE).is_file() and not (out / "attacks" / reproduce.DONE).exists()
    assert (out / "attacks" / "results.json").is_file()            # the killed part's partial file
    assert not (out / "report.md").exists()

    calls.clear()
    _fake_runners(monkeypatch, calls)
    capsys.readouterr()
    assert cli.main(["--quick", "--parts", parts, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert [c[0] for c in calls] == ["attacks", "ood"]              # landscape reused, not rerun
    assert [c[2] for c in calls] == [{}, {}]                        # parts without checkpoints inside
    assert "reused" in printed and "reused from" in printed and "landscape" in printed.split("reused from")[1]
    assert "completion record" in printed and "no results.json" in printed     # why attacks and ood ran
    md = (out / "report.md").read_text()
    for part in parts.split(","):                                   # the report covers every part again
        assert f"## {reproduce.TITLES[part]}" in md and f"fake {part} at quick" in md and f"({part}/{part}.png)" in md
    assert "reused by --resume" in md and "Resumed (`--resume`): landscape" in md
    timings = json.loads((out / "timings.json").read_text())
    assert set(parts.split(",")) <= set(timings)
    written = {p: report.read_json(out / p / "results.json") for p in parts.split(",")}
    saved = json.loads((out / "verdicts.json").read_text())
    assert [v["claim"] for v in saved] == [v.claim for v in verdicts.all_verdicts(written)]

    # everything finished: a second --resume reruns nothing; at another scale nothing is reused
    calls.clear()
    assert cli.main(["--quick", "--parts", parts, "--out", str(out), "--resume"]) == 0
    assert calls == []
    assert cli.main(["--parts", "ood", "--out", str(out), "--resume"]) == 0
    assert [c[:2] for c in calls] == [("ood", "cpu")]
    # a finished part whose figure went missing is rerun
    calls.clear()
    (out / "attacks" / "attacks.png").unlink()
    assert cli.main(["--quick", "--parts", "attacks", "--out", str(out), "--resume"]) == 0
    assert [c[0] for c in calls] == ["attacks"]
    # a part that resumes inside from train.fit's checkpoints gets its folder OUT/<part>/ckpt
    calls.clear()
    assert cli.main(["--quick", "--parts", "landscape", "--out", str(tmp_path / "fresh"), "--resume"]) == 0
    assert calls == [("landscape", "quick", {"workdir": tmp_path / "fresh" / "landscape" / "ckpt"})]


def test_resume_needs_out():
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--resume"])


def test_full_report_states_the_estimates(tmp_path, monkeypatch):
    """The full report's preamble repeats the plan's GPU-hours beside the measured times (fake runners and a
    pretended GPU: nothing trains); at the full scale the landscape part always gets its checkpoint folder."""
    calls = []
    _fake_runners(monkeypatch, calls)
    monkeypatch.setattr(reproduce, "has_gpu", lambda: True)
    monkeypatch.setattr(reproduce, "has_cifar10", lambda: True)
    out = tmp_path / "full"
    assert cli.main(["--full", "--parts", "landscape,ood", "--out", str(out)]) == 0
    assert calls[0] == ("landscape", "full", {"workdir": out / "landscape" / "ckpt"})
    md = (out / "report.md").read_text()
    est = reproduce.FULL_ESTIMATES
    assert "Estimated GPU-hours per part" in md and "not measurements" in md
    for part in ("landscape", "ood"):
        assert f"{part} {reproduce._hours(*est[part]['hours'])}" in md
    total = reproduce._hours(est["landscape"]["hours"][0] + est["ood"]["hours"][0],
                             est["landscape"]["hours"][1] + est["ood"]["hours"][1])
    assert f"total {total}." in md


def test_landscape_skip_table_resumes_from_its_checkpoints(tmp_path):
    """The landscape part's resume inside a part: with a workdir its SGD net trains in a checkpointed
    train.fit run folder; a rerun whose finished rows were lost restores the net (no new training epoch
    in metrics.jsonl) and gets the same numbers; a rerun with its rows intact reuses them."""
    from robustjax.experiments import landscape
    cfg = landscape.load_config("test")
    cfg.update(parts=("skip",), variants=("skip_sgd",), dataset="mnist", n_train=64, n_test=64)
    out, ckpt = tmp_path / "landscape", tmp_path / "landscape" / "ckpt"
    first = landscape.run(cfg, out, workdir=ckpt)["skip"]["rows"]
    (run_dir,) = [p for p in ckpt.iterdir() if p.is_dir()]
    assert list(run_dir.glob("ckpt-*.json"))
    epochs = (run_dir / "metrics.jsonl").read_text().count("\n")
    partial = json.loads((out / "results_partial.json").read_text())
    assert partial["skip"]["rows"] and partial["skip"]["setting"]["n_train"] == 64
    (out / "results_partial.json").write_text(json.dumps({"skip": {"rows": [], "setting": partial["skip"]["setting"]}}))
    again = landscape.run(cfg, out, workdir=ckpt)["skip"]["rows"]
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == epochs      # restored, not retrained
    key = [(r["variant"], r["train_accuracy"], r["test_accuracy"]) for r in first]
    assert [(r["variant"], r["train_accuracy"], r["test_accuracy"]) for r in again] == key
    reused = landscape.run(cfg, out, workdir=ckpt)["skip"]["rows"]
    assert reused == json.loads(json.dumps(again, default=str))
