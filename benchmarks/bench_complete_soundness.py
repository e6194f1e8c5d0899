"""Complete verification against exact answers on many fresh random ReLU networks (issue 13, "never a wrong
answer"): counts `complete.verify_property` decisions that contradict the exact minimal l_inf distance (must
be 0), and how many it decides within its time limit.

Networks: six architectures (5-10 inputs, 1-3 hidden ReLU layers of 8-24 units, 3-5 classes; `ARCHS`), in
turn, each time with fresh Gaussian weights / sqrt(fan-in) and biases 0.5 N(0, 1) (the verifier's programs take
the weights as arguments, so each architecture compiles once). Per network two points uniform in [0.3, 0.7]^d, their float64 class as the label, and the
exact minimal l_inf distance d in the box [0, 1] by `verify.min_adversarial_milp` (HiGHS, relative gap 1e-6;
points where it is not 'optimal' are skipped, e.g. 'infeasible': no adversarial input in the whole box). The property "every x' of the box [x - eps, x + eps] in
[0, 1] is classified as the label" is then decided at eps = d (1 -+ delta), delta = 5 % and 0.5 %, twice: at
the defaults (small nets go to the exact MILP stage) and with `milp_max_unstable=0` (branch and bound). A
'verified' at eps > d or a 'counterexample' at eps < d is a wrong answer; every counterexample is also
re-evaluated here (inside the box, its float64 class not the label, or tied with it).

    python benchmarks/bench_complete_soundness.py [--nets N] [--time-limit T]
      (writes complete_soundness.md and results/complete_soundness.json next to this file)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from robustjax import complete, verify
from robustjax.bounds import predict_float64
from robustjax.network import Dense, Flatten, ReLU, as_graph, evaluate_numpy

HERE = Path(__file__).resolve().parent
DELTAS = (0.05, 0.005)
MODES = {"default": {}, "bab": {"milp_max_unstable": 0}}
ARCHS = ((5, 16, 3), (8, 12, 12, 4), (6, 24, 5), (10, 16, 16, 16, 3), (7, 20, 20, 5), (10, 8, 8, 8, 4))


def random_net(rng, sizes):
    layers = [Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(ReLU())
        layers.append(Dense(rng.normal(size=(a, b)) / np.sqrt(a), 0.5 * rng.normal(size=b)))
    return as_graph(layers, (sizes[0],)), sizes


def counterexample_ok(graph, res, lo, hi, label):
    cx = np.asarray(res.counterexample, np.float64)
    if np.any(cx < lo) or np.any(cx > hi):
        return False
    out = evaluate_numpy(graph, cx[None])[0]
    return bool(np.argmax(out) != label or np.sum(out == out.max()) > 1)


def run(n_nets, seed=0, time_limit=60.0, log=print):
    rng = np.random.default_rng(seed)
    rows, t_all = [], time.perf_counter()
    for k in range(n_nets):
        sizes = list(ARCHS[k % len(ARCHS)])
        g, sizes = random_net(rng, sizes)
        x = rng.uniform(0.3, 0.7, (2, sizes[0]))
        y = predict_float64(g, x)
        for i in range(len(x)):
            exact = verify.min_adversarial_milp(list(g.layers), x[i], int(y[i]), p=np.inf, time_limit=60)
            if exact.status != "optimal" or not np.isfinite(exact.distance):
                rows.append({"net": k, "sizes": sizes, "point": i, "skipped": exact.status})
                continue
            d = float(exact.distance)
            for delta in DELTAS:
                for side in (-1, 1):
                    eps = d * (1 + side * delta)
                    lo, hi = np.clip(x[i] - eps, 0, 1), np.clip(x[i] + eps, 0, 1)
                    for mode, kw in MODES.items():
                        res = complete.verify_property(g, (lo, hi), int(y[i]), time_limit=time_limit, **kw)
                        wrong = (res.status == "verified" and side > 0) or \
                                (res.status == "counterexample" and (side < 0 or not counterexample_ok(g, res, lo,
                                                                                                        hi, y[i])))
                        rows.append({"net": k, "sizes": sizes, "point": i, "distance": d, "delta": delta,
                                     "side": "below" if side < 0 else "above", "mode": mode, "status": res.status,
                                     "stage": res.stage, "domains": res.domains, "time_s": res.time_s,
                                     "wrong": bool(wrong)})
        if (k + 1) % 10 == 0 or k + 1 == n_nets:
            done = [r for r in rows if "status" in r]
            log(f"{k + 1}/{n_nets} nets, {len(done)} decisions asked, {sum(r['wrong'] for r in done)} wrong, "
                f"{time.perf_counter() - t_all:.0f} s")
    return rows


def write(rows, wall, load_before, load_after, args, time_limit):
    asked = [r for r in rows if "status" in r]
    skipped = [r for r in rows if "skipped" in r]
    wrong = sum(r["wrong"] for r in asked)
    out = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores)", "command": args,
           "time_limit_s": time_limit, "load": {"before": load_before, "after": load_after}, "wall_s": wall,
           "decisions_asked": len(asked), "wrong": wrong, "skipped_points": len(skipped), "rows": rows}
    (HERE / "results" / "complete_soundness.json").write_text(json.dumps(out, indent=1))
    nets = len({r["net"] for r in rows})
    lines = ["# Complete verification against the exact distance on random ReLU networks", "",
             f"{out['date']}, {out['machine']}; 1/5/15-min load averages {' '.join(load_before)} before, "
             f"{' '.join(load_after)} after; {wall:.0f} s wall. Command: "
             f"`python benchmarks/bench_complete_soundness.py {args}`; time limit {time_limit:.0f} s per property. "
             "What is asked: the script's docstring.", "",
             f"**{nets} networks, {len(asked)} properties at eps = d (1 -+ delta): {wrong} wrong answers.** "
             f"Points without an exact distance, skipped: {len(skipped)} (MILP status: "
             f"{', '.join(f'{k} {v}' for k, v in sorted(Counter(r['skipped'] for r in skipped).items()))}; "
             "'infeasible': no adversarial input in the whole box [0, 1]^d).", "",
             "| mode | delta | side | asked | verified | counterexample | timeout / unknown | wrong | stages "
             "| median s | max s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        for delta in DELTAS:
            for side in ("below", "above"):
                rs = [r for r in asked if r["mode"] == mode and r["delta"] == delta and r["side"] == side]
                if not rs:
                    continue
                st = Counter(r["status"] for r in rs)
                stages = ", ".join(f"{k or '-'} {v}" for k, v in sorted(Counter(r["stage"] for r in rs).items()))
                t = [r["time_s"] for r in rs]
                lines.append(f"| {mode} | {delta:g} | {side} | {len(rs)} | {st['verified']} | {st['counterexample']}"
                             f" | {st['timeout'] + st['unknown']} | {sum(r['wrong'] for r in rs)} | {stages} | "
                             f"{np.median(t):.2f} | {max(t):.1f} |")
    lines += ["", "below: eps < d, the property holds ('verified' is the only right decision); above: eps > d, it "
              "does not ('counterexample')."]
    (HERE / "complete_soundness.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", type=int, default=36)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=60.0)
    a = ap.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    rows = run(a.nets, a.seed, a.time_limit, log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - t0
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(write(rows, wall, load_before, load_after, f"--nets {a.nets} --seed {a.seed} --time-limit {a.time_limit:g}",
                a.time_limit))


if __name__ == "__main__":
    main()
