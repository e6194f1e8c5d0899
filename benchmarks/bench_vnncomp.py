"""robustjax.complete on the VNN-COMP 2021 "eran" benchmark (../shared/benchmarks/vnncomp2021_eran), beside the
2021 tools' answers.

    python benchmarks/bench_vnncomp.py --nets sigmoid --timeout 300 --merge      # one net, all 36 instances
    python benchmarks/bench_vnncomp.py --nets relu --skip 12 --per-net 12 --merge # instances 13-24 of a net
    python benchmarks/bench_vnncomp.py --render                                  # vnncomp.md from the JSON again

A decision reached after the time limit (branch and bound checks the clock between batches) counts as a timeout.

For each instance: our status and time, the 2021 answers, and whether ours goes against a unanimous 2021
decision (where the 2021 tools disagree among themselves, the table shows every answer: ours rest on sound
bounds or a counterexample re-verified in float64). --merge keeps the runs of other (nets, skip) choices in
the JSON. Writes benchmarks/results/vnncomp.json and benchmarks/vnncomp.md (machine, load, date; the notes
in benchmarks/vnncomp_notes.md are appended).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ERAN = ROOT.parent / "shared" / "benchmarks" / "vnncomp2021_eran"


def _load():
    return open(f"/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def tool_answers():
    out = defaultdict(dict)
    with open(ERAN / "results_2021.csv") as f:
        for row in csv.DictReader(f):
            res = row["result"].strip().lower()
            res = {"unsat": "holds", "sat": "violated"}.get(res, res)
            out[(Path(row["onnx"]).name, Path(row["vnnlib"]).name)][row["tool"]] = (res, float(row["time_s"] or "nan"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-net", type=int, default=None, help="the first N instances of each net")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N instances of each net")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--nets", default="relu,sigmoid")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vnncomp.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other nets' runs of --out (one run per --nets)")
    ap.add_argument("--render", action="store_true", help="only rewrite vnncomp.md from --out")
    args = ap.parse_args(argv)
    if args.render:
        write_md(json.loads(Path(args.out).read_text())["runs"], tool_answers())
        return
    from robustjax import complete, vnnlib
    from robustjax.network.from_onnx import from_onnx

    answers = tool_answers()
    with open(ERAN / "instances.csv") as f:
        instances = [r for r in csv.reader(f) if r]
    rows, graphs, counts = [], {}, defaultdict(int)
    for onnx_rel, spec_rel, _ in instances:
        net = Path(onnx_rel).name
        kind = "relu" if "relu" in net else "sigmoid"
        if kind not in args.nets.split(",") or (args.per_net and counts[kind] >= args.skip + args.per_net):
            continue
        counts[kind] += 1
        if counts[kind] <= args.skip:
            continue
        if net not in graphs:
            graphs[net] = from_onnx(ERAN / onnx_rel)
        prop = vnnlib.load(ERAN / spec_rel)
        load0 = _load()
        t0 = time.perf_counter()
        res = complete.verify_property(graphs[net], prop, time_limit=args.timeout)
        wall = time.perf_counter() - t0
        status = {"verified": "holds", "counterexample": "violated"}.get(res.status, res.status)
        theirs = answers.get((net, Path(spec_rel).name), {})
        wrong = contradicts(status, {t: r for t, (r, _) in theirs.items()})
        rows.append(dict(net=net, spec=Path(spec_rel).name, status=status, stage=res.stage, time_s=round(wall, 2),
                         lower_bound=res.lower_bound, domains=res.domains, load=load0, contradicts=bool(wrong),
                         tools={t: r for t, (r, _) in theirs.items()}))
        print(f"{net} {Path(spec_rel).name}: {status} ({res.stage or '-'}) {wall:.1f} s, 2021: "
              f"{sorted({r for r, _ in theirs.values() if r in ('holds', 'violated')}) or 'undecided'}", flush=True)
        save(args, rows, answers, finished=False)
    save(args, rows, answers, finished=True)


def save(args, rows, answers, *, finished: bool):
    """Writes the JSON and the markdown (after every instance, so that a stopped run keeps what it decided)."""
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M"), skip=args.skip, machine=f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores", timeout_s=args.timeout, per_net=args.per_net, load_end=_load(),
                nets=args.nets, finished=finished)
    out = Path(args.out)
    runs = [dict(meta=meta, rows=rows)]
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        def span(meta):
            skip = meta.get("skip", 0)
            return set(range(skip, skip + meta["per_net"] if meta.get("per_net") else 36))
        new = span(vars(args))
        kept = [r for r in old.get("runs", [old])          # runs of other nets, or of other instances of these nets
                if not (set(r["meta"].get("nets", "relu,sigmoid").split(",")) & set(args.nets.split(",")))
                or not (span(r["meta"]) & new)]
        runs = kept + runs
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(runs=runs), indent=1, default=float))
    write_md(runs, answers)


def contradicts(status: str, tools: dict) -> bool:
    """Our decision against a unanimous 2021 decision (where the tools disagree, one of them is wrong: the
    table lists those instances with every answer; ours rest on sound bounds or a float64-checked point)."""
    decided = {v for v in tools.values() if v in ("holds", "violated")}
    return status in ("holds", "violated") and len(decided) == 1 and status not in decided


def _which(meta) -> str:
    skip, n = meta.get("skip", 0), meta["per_net"]
    if not n:
        return f"instances {skip + 1}-36 per net" if skip else "all"
    return f"instances {skip + 1}-{skip + n} per net in instances.csv order"


def _in_time(row, timeout):
    """The row with a decision reached after the time limit (the last batch of branch and bound may end past
    it) counted as a timeout, as the competition counts it; the late decision kept in `late`."""
    if row["status"] in ("holds", "violated") and row["time_s"] > timeout:
        return dict(row, status="timeout", late=row["status"])
    return row


def write_md(runs, answers):
    rows = [_in_time(r, run["meta"]["timeout_s"]) for run in runs for r in run["rows"]]
    tools = sorted({t for r in rows for t in r["tools"]})
    lines = ["# VNN-COMP 2021 eran: robustjax.complete beside the 2021 tools", ""]
    for run in runs:
        meta = run["meta"]
        lines.append(f"- nets {meta.get('nets', 'relu,sigmoid')}: {meta['date']}, {meta['machine']}, time limit "
                     f"{meta['timeout_s']:.0f} s per instance (the competition's: 300 s), {len(run['rows'])} instances "
                     f"{'' if meta.get('finished', True) else '(run stopped before its end) '}"
                     f"({_which(meta)}); load at the end "
                     f"{meta['load_end']}, before each instance in the JSON.")
    lines += ["", "| net | instances | robustjax holds | robustjax violated | against a unanimous 2021 answer | " +
              " | ".join(f"{t} (same instances)" for t in tools) + " |",
              "|---|---|---|---|---|" + "---|" * len(tools)]
    for net in sorted({r["net"] for r in rows}):
        rs = [r for r in rows if r["net"] == net]
        cells = []
        for t in tools:
            solved = sum(r["tools"].get(t) in ("holds", "violated") for r in rs)
            cells.append(str(solved))
        lines.append(f"| {net} | {len(rs)} | {sum(r['status'] == 'holds' for r in rs)} | "
                     f"{sum(r['status'] == 'violated' for r in rs)} | {sum(contradicts(r['status'], r['tools']) for r in rs)} | " +
                     " | ".join(cells) + " |")
    lines += ["", "| net | property | robustjax | stage | time s | lower bound | 2021 answers |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        told = ", ".join(f"{t}: {v}" for t, v in sorted(r["tools"].items()) if v in ("holds", "violated")) or "none decided"
        status = r["status"] + (f" ({r['late']} after the limit)" if r.get("late") else "")
        lines.append(f"| {r['net']} | {r['spec']} | {status} | {r['stage'] or '-'} | {r['time_s']} | "
                     f"{r['lower_bound']:.4g} | {told} |")
    notes = ROOT / "benchmarks" / "vnncomp_notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    (ROOT / "benchmarks" / "vnncomp.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
