"""The talk's claims, checked: one pure function per claim, from the numbers a part of the main job wrote
(its results.json, read back), to a `Verdict`: "holds", "does not hold" or "not testable at this scale",
the rule that decided it and the numbers it rests on. Nothing here trains or attacks; nothing is typed in:
change the numbers and the verdict follows.

`all_verdicts(results)` takes {part: results dict} (parts as in scripts/reproduce.py: landscape,
guarantees, attacks, spatial, ood, random_labels) and returns the verdicts of the parts present.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

HOLDS = "holds"
FAILS = "does not hold"
UNTESTABLE = "not testable at this scale"
OUTCOMES = (HOLDS, FAILS, UNTESTABLE)

CHANCE = 0.1                 # 10 classes (MNIST, CIFAR-10)
SIMILAR_ERROR = 0.01         # "at similar test error": within 1 percentage point of the plain model's
FITS = 0.99                  # "fits its training set": training accuracy at least 99 %


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str
    outcome: str
    rule: str
    numbers: dict

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if not isinstance(self.numbers, dict):
            raise ValueError(f"numbers must be a dict, got {type(self.numbers).__name__}")
        nan = [k for k, v in self.numbers.items() if _has_nan(v)]
        if nan and self.outcome != UNTESTABLE:      # a rule compared with NaN decides nothing
            object.__setattr__(self, "outcome", UNTESTABLE)
            object.__setattr__(self, "rule", f"{self.rule} ({', '.join(nan)}: NaN, so not testable.)")

    def line(self) -> str:
        nums = "; ".join(f"{k} {_fmt(v)}" for k, v in self.numbers.items())
        return f"**{self.claim}: {self.outcome}.** Rule: {self.rule} Numbers: {nums or '-'}."


def _has_nan(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_has_nan(u) for u in v)
    if isinstance(v, dict):
        return any(_has_nan(u) for u in v.values())
    try:
        return not isinstance(v, (bool, str)) and math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else (f"{v:.4g}" if math.isfinite(v) else str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(u) for u in v) + "]" if v else "none"
    return str(v)


# ----------------------------------------------------------------------------- landscape

WIDTHS_RULE = ("holds if every network the talk marks M > N (VGG, Inception) has, by our shape inference, a "
               "layer with more units than N; the other rows' agreement is listed.")


def widths(landscape: dict) -> Verdict:
    rows = [r for r in landscape.get("widths", {}).get("rows", []) if "talk_exceeds" in r]
    claim = "Practical networks (VGG, Inception) have a layer wider than N (width table)"
    if not rows or not any(r["talk_exceeds"] for r in rows):
        return Verdict(claim, UNTESTABLE, WIDTHS_RULE, {"rows with a talk entry": len(rows)})
    yes = [r for r in rows if r["talk_exceeds"]]
    agree_yes = [r["model"] for r in yes if r["exceeds_N"]]
    disagree = [f"{r['model']} (ours {'yes' if r['exceeds_N'] else 'no'}, talk {'yes' if r['talk_exceeds'] else 'no'})"
                for r in rows if r["exceeds_N"] != r["talk_exceeds"]]
    nums = {"N": landscape["widths"].get("N"), "talk-yes rows confirmed": f"{len(agree_yes)}/{len(yes)}",
            "rows agreeing with the talk": f"{len(rows) - len(disagree)}/{len(rows)}", "disagreements": disagree}
    return Verdict(claim, HOLDS if len(agree_yes) == len(yes) else FAILS, WIDTHS_RULE, nums)


RAND_RULE = ("holds if every skip net with M >= N skip units whose output layer was fitted by least squares "
             "(rand) classifies its whole training set correctly.")


def rand_zero_train_error(landscape: dict) -> Verdict:
    claim = "Skip nets with M >= N, random hidden weights: zero training error (rand)"
    rows = [r for r in landscape.get("skip", {}).get("rows", []) if r.get("variant") == "skip_rand"]
    rows = [r for r in rows if r.get("M", 0) >= r.get("n_train", math.inf)]
    if not rows:
        return Verdict(claim, UNTESTABLE, RAND_RULE, {"rand rows with M >= N": 0})
    nums = {f"{r['arch']} {r['act']} train accuracy": r["train_accuracy"] for r in rows}
    nums.update({"M": rows[0]["M"], "N": rows[0]["n_train"]})
    ok = all(r["train_accuracy"] == 1.0 for r in rows)
    return Verdict(claim, HOLDS if ok else FAILS, RAND_RULE, nums)


SGD_RULE = (f"per architecture and activation with both rows: testable where the SGD-trained skip net fits its "
            f"training set (train accuracy >= {FITS:.0%}); holds if there SGD's test accuracy exceeds rand's in "
            "every such pair.")


def sgd_beats_rand(landscape: dict) -> Verdict:
    claim = "Among zero-training-error solutions SGD picks one that generalizes better than rand"
    by = {(r["arch"], r["act"], r["variant"]): r for r in landscape.get("skip", {}).get("rows", [])}
    pairs = [(k[:2], by[k], by[(k[0], k[1], "skip_rand")]) for k in by
             if k[2] == "skip_sgd" and (k[0], k[1], "skip_rand") in by]
    nums = {}
    testable = []
    for (arch, act), sgd, rand in pairs:
        nums[f"{arch} {act} SGD train / test, rand test"] = (
            f"{sgd['train_accuracy']:.4f} / {sgd['test_accuracy']:.4f}, {rand['test_accuracy']:.4f}")
        if sgd["train_accuracy"] >= FITS:
            testable.append(sgd["test_accuracy"] > rand["test_accuracy"])
    if not testable:
        return Verdict(claim, UNTESTABLE, SGD_RULE, nums or {"pairs": 0})
    return Verdict(claim, HOLDS if all(testable) else FAILS, SGD_RULE, nums)


# ----------------------------------------------------------------------------- guarantees

CL_RULE = (f"among the one-hidden-layer nets within {SIMILAR_ERROR:.0%} test error of the plain net, the best "
           "cross-Lipschitz median certified radius (Theorem 2.1) must exceed the best of weight decay and the "
           "best of dropout; not testable if a group has no net in that band.")


def _best(rows, key):
    return max(rows, key=lambda r: r[key]) if rows else None


def cross_lipschitz_beats(guarantees: dict) -> Verdict:
    claim = "Cross-Lipschitz gives larger guarantees than weight decay and dropout at similar test error"
    rows = [r for r in guarantees.get("rows", []) if r.get("model", "").startswith("1HL") and r.get("dataset", "mnist") == "mnist"]
    plain = [r for r in rows if r["method"] == "plain"]
    if not plain:
        return Verdict(claim, UNTESTABLE, CL_RULE, {"plain net": "missing"})
    e0 = plain[0]["test_error"]
    band = [r for r in rows if r["test_error"] <= e0 + SIMILAR_ERROR]
    groups = {g: _best([r for r in band if r["method"].startswith(g)], "certified_median")
              for g in ("cross_lipschitz", "weight_decay", "dropout")}
    nums = {"plain test error": e0, "plain median radius": plain[0]["certified_median"]}
    for g, r in groups.items():
        nums[f"best {g} (lambda, test error, median radius)"] = (
            "none in band" if r is None else f"{_fmt(r['lambda'])}, {r['test_error']:.4f}, {r['certified_median']:.4g}")
    if any(r is None for r in groups.values()):
        return Verdict(claim, UNTESTABLE, CL_RULE, nums)
    cl = groups["cross_lipschitz"]["certified_median"]
    ok = cl > groups["weight_decay"]["certified_median"] and cl > groups["dropout"]["certified_median"]
    return Verdict(claim, HOLDS if ok else FAILS, CL_RULE, nums)


KERNEL_RULE = ("holds if a cross-Lipschitz kernel machine within 2 percentage points of the plain kernel "
               "machine's test error has a median attack distance at least 1.5 x the plain one's (the slide: 1.2 "
               "-> 2.5); not testable if the plain kernel machine does not classify (test error above 50 %).")


def kernel_distance_doubled(guarantees: dict) -> Verdict:
    claim = "Cross-Lipschitz roughly doubles the kernel machine's adversarial distance"
    rows = [r for r in guarantees.get("rows", []) if r.get("model") == "gaussian_kernel"]
    plain = [r for r in rows if r["method"] == "kernel"]
    cl = [r for r in rows if r["method"] != "kernel"]
    if not plain or not cl:
        return Verdict(claim, UNTESTABLE, KERNEL_RULE, {"kernel rows": len(rows)})
    p = plain[0]
    nums = {"plain kernel test error": p["test_error"], "plain median attack distance": p["attack_median"]}
    if p["test_error"] > 0.5:
        return Verdict(claim, UNTESTABLE, KERNEL_RULE, nums)
    band = [r for r in cl if r["test_error"] <= p["test_error"] + 0.02]
    best = _best(band, "attack_median")
    if best is None:
        nums["cross-Lipschitz kernels within 2 pp"] = "none"
        return Verdict(claim, FAILS, KERNEL_RULE, nums)
    ratio = best["attack_median"] / p["attack_median"] if p["attack_median"] > 0 else math.inf
    nums.update({"cross-Lipschitz (lambda, test error, median attack distance)":
                 f"{_fmt(best['lambda'])}, {best['test_error']:.4f}, {best['attack_median']:.4g}", "ratio": ratio})
    return Verdict(claim, HOLDS if ratio >= 1.5 else FAILS, KERNEL_RULE, nums)


# ----------------------------------------------------------------------------- attacks

REGION_RULE = ("on the points the region attack ran on, holds if its median l2 distance ratio to Carlini-Wagner "
               "and to DeepFool is at most 1 (at least as small, the talk: up to 10 % smaller); not testable on "
               "fewer than 5 points with both attacks successful.")


def region_attack(attacks: dict) -> Verdict:
    claim = "The region attack finds l2 perturbations up to 10 % smaller than Carlini-Wagner and DeepFool"
    rows = {r["region l2 over"]: r for r in attacks.get("region_ratios", [])}
    need = ("cw", "deepfool")
    nums = {f"median region / {k}": rows[k]["median ratio"] for k in need if k in rows}
    nums.update({f"region smaller than {k} on": rows[k]["region better on"] for k in need if k in rows})
    if any(k not in rows or rows[k]["points"] < 5 or not math.isfinite(rows[k]["median ratio"]) for k in need):
        nums["points"] = [rows[k]["points"] for k in need if k in rows]
        return Verdict(claim, UNTESTABLE, REGION_RULE, nums)
    nums["points"] = min(rows[k]["points"] for k in need)
    ok = all(rows[k]["median ratio"] <= 1.0 for k in need)
    return Verdict(claim, HOLDS if ok else FAILS, REGION_RULE, nums)


# ----------------------------------------------------------------------------- spatial

SPATIAL_RULE = ("holds if the grid search over rotations and translations (the full range) leaves at most half "
                "of the clean accuracy on the attacked points.")


def _full_range(curve: dict) -> float:
    return curve[max(curve, key=float)]


def spatial_breaks(spatial: dict) -> Verdict:
    claim = "Rotations and translations alone break classifiers"
    t = spatial.get("threats", {})
    if "rotation+translation" not in t:
        return Verdict(claim, UNTESTABLE, SPATIAL_RULE, {"threats": list(t)})
    clean = spatial["clean_accuracy_attacked"]
    nums = {"clean accuracy": clean, "points": spatial.get("n_attacked")}
    empty = [k for k in t if not t[k]["grid"]["robust_accuracy"]]
    if empty:
        return Verdict(claim, UNTESTABLE, SPATIAL_RULE, {**nums, "threats without a robust-accuracy curve": empty})
    for threat in ("rotation", "translation", "rotation+translation"):
        if threat in t:
            nums[f"robust accuracy, {threat} (grid)"] = _full_range(t[threat]["grid"]["robust_accuracy"])
    both = _full_range(t["rotation+translation"]["grid"]["robust_accuracy"])
    return Verdict(claim, HOLDS if both <= 0.5 * clean else FAILS, SPATIAL_RULE, nums)


# ----------------------------------------------------------------------------- far from the data

LOW_CONFIDENCE = 0.3
OOD_RULE = (f"holds if CEDA and ACET each have mean maximal confidence <= {LOW_CONFIDENCE} on uniform and on "
            f"low-pass noise at test error within {SIMILAR_ERROR:.0%} of the plain model's; not testable if the "
            f"plain model is already below {LOW_CONFIDENCE} on both (nothing to fix).")


def far_from_data(ood: dict) -> Verdict:
    claim = "Low confidence far from the data after CEDA / ACET training"
    m = ood.get("methods", {})
    if not {"plain", "ceda", "acet"} <= set(m):
        return Verdict(claim, UNTESTABLE, OOD_RULE, {"methods": list(m)})
    nums = {}
    for meth in ("plain", "ceda", "acet"):
        nums[f"{meth} test error / MMC uniform / MMC low-pass"] = (
            f"{m[meth]['test_error']:.4f} / {m[meth]['sets']['uniform']['mmc']:.3f} / "
            f"{m[meth]['sets']['lowpass']['mmc']:.3f}")
    if all(m["plain"]["sets"][s]["mmc"] <= LOW_CONFIDENCE for s in ("uniform", "lowpass")):
        return Verdict(claim, UNTESTABLE, OOD_RULE, nums)
    ok = all(m[meth]["sets"][s]["mmc"] <= LOW_CONFIDENCE and
             m[meth]["test_error"] <= m["plain"]["test_error"] + SIMILAR_ERROR
             for meth in ("ceda", "acet") for s in ("uniform", "lowpass"))
    return Verdict(claim, HOLDS if ok else FAILS, OOD_RULE, nums)


# ----------------------------------------------------------------------------- Zhang et al.

ZHANG_RULE = ("holds if the net ends with training error <= the config's threshold (1 %) on true labels, random "
              "labels and random inputs, test accuracy within 5 points of chance (10 %) for the latter two, and "
              "at least 30 points above chance on the true labels.")


def fits_random_labels(random_labels: dict) -> Verdict:
    claim = "The same net fits true labels, random labels and random inputs (Zhang et al.)"
    s = random_labels.get("settings", {})
    need = ("true_labels", "random_labels", "random_inputs")
    if not all(k in s for k in need):
        return Verdict(claim, UNTESTABLE, ZHANG_RULE, {"settings": list(s)})
    thr = random_labels.get("config", {}).get("fit_threshold", 0.01)
    nums = {f"{k} train error / test accuracy": f"{s[k]['train_error']:.4f} / {s[k]['test_accuracy']:.4f}" for k in need}
    ok = (all(s[k]["train_error"] <= thr for k in need)
          and all(abs(s[k]["test_accuracy"] - CHANCE) <= 0.05 for k in need[1:])
          and s["true_labels"]["test_accuracy"] >= CHANCE + 0.3)
    return Verdict(claim, HOLDS if ok else FAILS, ZHANG_RULE, nums)


# ----------------------------------------------------------------------------- all

CLAIMS: dict[str, tuple[Callable[[dict], Verdict], ...]] = {
    "landscape": (widths, rand_zero_train_error, sgd_beats_rand),
    "random_labels": (fits_random_labels,),
    "guarantees": (cross_lipschitz_beats, kernel_distance_doubled),
    "attacks": (region_attack,),
    "spatial": (spatial_breaks,),
    "ood": (far_from_data,),
}


def all_verdicts(results: dict[str, dict]) -> list[Verdict]:
    """The verdicts of every claim whose part is in `results` ({part: its results dict})."""
    unknown = sorted(set(results) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; known: {sorted(CLAIMS)}")
    return [fn(results[part]) for part, fns in CLAIMS.items() if part in results for fn in fns]
