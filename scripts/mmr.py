"""MMR on MNIST (Croce, Andriushchenko, Hein, AISTATS 2019): a ReLU net trained plain, with the MMR regularizer,
and with MMR + adversarial training (configs in scripts/configs/mmr.py); then per net the test error, the PGD
robust error and the CROWN certified robust error at eps (l_inf), and the minimal perturbations that
DeepFool, Carlini-Wagner, DDN, minimal PGD and the randomized region attack find on the first test points,
with the paired ratio region / other attack per point. The talk's claim: on such provably trained nets the
established attacks overestimate the robustness (the region attack finds smaller distances).

    nice -n 10 python scripts/mmr.py --out benchmarks/results --md benchmarks/mmr.md --workdir /tmp/mmr_runs
    python scripts/mmr.py --config quick --out /tmp/mmr

`run(config, workdir=None, log=print) -> dict` returns {"config", "schemes": {name: {...}}, "machine", ...};
main writes mmr.json into --out and the markdown table to --md. With --workdir the trained nets are kept
there (train.fit resumes from a finished checkpoint, so a rerun attacks the same nets without training).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.experiments.configs import check_config, load_config
from robustjax.report import load1, machine

ROOT = Path(__file__).resolve().parents[1]

INF = float("inf")


def _pn(p) -> str:
    return "inf" if p == INF else str(int(p))


def train_scheme(name: str, spec: tuple, config: dict, data, workdir, log):
    """(logits_fn, seconds or None): the net of config["net"] trained with the regularizer spec."""
    from robustjax import train
    (xtr, ytr), _ = data
    cfg = train.TrainConfig(**config["net"], regularizers=tuple(spec), seed=config["seed"], progress=False)
    t0 = time.perf_counter()
    state = train.fit(cfg, (xtr, ytr), None, None if workdir is None else Path(workdir) / name,
                      log=lambda r: log(f"  {name} epoch {r['epoch']}: train loss {r['train_loss']:.4f} "
                                        f"regularizer {r['train_regularizer']:.4f} acc {r['train_accuracy']:.4f} "
                                        f"({r['time_s']:.0f} s, load {load1():.1f})"))
    return jax.jit(state.logits_fn()), time.perf_counter() - t0


def predict(f, x, batch=1000) -> np.ndarray:
    return np.concatenate([np.asarray(jnp.argmax(f(x[i:i + batch]), -1)) for i in range(0, len(x), batch)])


def minimal_attack(label: str, f, x, y, p, config, data, key):
    from robustjax import attacks
    (xtr, ytr), _ = data
    if label == "region":
        return attacks.region(f, x, y, p=p, key=key, x_train=xtr, y_train=ytr,
                              processes=config["region_processes"], **config["region"])
    fn = {"deepfool": attacks.deepfool, "cw": attacks.cw, "ddn": attacks.ddn, "pgd_minimal": attacks.pgd_minimal}[label]
    return fn(f, x, y, p=p, key=key, **config[label])


def paired(a, b) -> dict | None:
    """Over the points where both attacks succeed with distance > 0: the median and 10 / 90 % quantiles of
    a / b, and the fraction of points where a is at least 0.1 % smaller."""
    a, b = np.asarray(a), np.asarray(b)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if not ok.any():
        return None
    r = a[ok] / b[ok]
    return dict(n=int(ok.sum()), median=float(np.median(r)), q10=float(np.quantile(r, 0.1)),
                q90=float(np.quantile(r, 0.9)), smaller=float(np.mean(r < 0.999)))


def evaluate_scheme(f, config: dict, data, log, only=None) -> dict:
    """Errors at eps and the minimal attacks; with `only` (attack names), just those attacks."""
    _, (xte, yte) = data
    out = {"test_error": float(np.mean(predict(f, xte) != yte))}
    if only is None:
        out.update(errors_at_eps(f, config, data, log))
    out.update(minimal_attacks(f, config, data, log, only))
    return out


def errors_at_eps(f, config: dict, data, log) -> dict:
    from robustjax import attacks, bounds
    _, (xte, yte) = data
    out = {}
    n, eps = config["n_eval"], config["eps"]
    xe, ye = xte[:n], yte[:n]
    key = jax.random.key(config["seed"])
    t0 = time.perf_counter()
    r = attacks.pgd(f, xe, ye, p=INF, eps=eps, key=key, **config["pgd"])
    out["pgd_error"] = float(np.mean(r.success | (predict(f, xe) != ye)))
    out["pgd_s"] = time.perf_counter() - t0
    if config["certify"]:
        t0 = time.perf_counter()
        ok = bounds.verified(f, xe, ye, eps=eps, p=INF, method=config["certify"])
        out["certified_error"] = float(1 - np.mean(ok))
        out["certify_s"] = time.perf_counter() - t0
    log(f"  at l_inf {eps} on {n} points: PGD error {out['pgd_error']:.3f}"
        + (f", {config['certify']} certified error {out['certified_error']:.3f} ({out['certify_s']:.0f} s)"
           if config["certify"] else "") + f" (load {load1():.1f})")
    return out


def certify_methods(f, methods, eps_list, n: int, data, log) -> dict:
    """{method: {eps: {"error", "seconds", "load"}}}: the certified robust error (1 - fraction verified;
    misclassified points count as errors) at each l_inf eps on the first n test points, per bound method."""
    from robustjax import bounds
    _, (xte, yte) = data
    xe, ye = xte[:n], yte[:n]
    out = {}
    for method in methods:
        out[method] = {}
        for eps in eps_list:
            t0 = time.perf_counter()
            ok = bounds.verified(f, xe, ye, eps=eps, p=INF, method=method)
            out[method][str(eps)] = dict(error=float(1 - np.mean(ok)), seconds=time.perf_counter() - t0, load=load1())
            log(f"  {method} at l_inf {eps} on {n} points: certified error {1 - np.mean(ok):.3f} "
                f"({time.perf_counter() - t0:.0f} s, load {load1():.1f})")
    return out


def minimal_attacks(f, config: dict, data, log, only=None) -> dict:
    _, (xte, yte) = data
    key = jax.random.key(config["seed"])
    out = {}
    m = config["n_attack"]
    xa, ya = jnp.asarray(xte[:m]), jnp.asarray(yte[:m])
    correct = predict(f, xte[:m]) == yte[:m]
    out["n_attack"], out["n_correct"] = m, int(correct.sum())
    out["attacks"] = {}
    for p in config["norms"]:
        for label in config["attacks"][p]:
            if only is not None and label not in only:
                continue
            t0 = time.perf_counter()
            r = minimal_attack(label, f, xa, ya, p, config, data, key)
            dt = time.perf_counter() - t0
            d = np.asarray(r.distance, np.float64)
            dc = d[correct]
            out["attacks"][f"{label} l{_pn(p)}"] = dict(
                p=_pn(p), attack=label, distance=[float(v) for v in d], median=float(np.median(dc)),
                success=float(np.mean(np.isfinite(dc))), seconds=dt, load=load1())
            log(f"  {label:12s} l{_pn(p)}: median {np.median(dc):.4f} over {len(dc)} correct points, success "
                f"{np.mean(np.isfinite(dc)):.2f} ({dt:.0f} s, load {load1():.1f})")
    add_ratios(out["attacks"], correct)
    out["correct"] = [bool(c) for c in correct]
    return out


def add_ratios(entries: dict, correct) -> None:
    """region_ratio for every attack entry with a region entry of the same norm (over the correct points)."""
    correct = np.asarray(correct, bool)
    for k, a in entries.items():
        reg = entries.get(f"region l{a['p']}")
        if a["attack"] != "region" and reg is not None:
            a["region_ratio"] = paired(np.asarray(reg["distance"])[correct], np.asarray(a["distance"])[correct])


def run(config: dict, workdir=None, log=print, only=None) -> dict:
    from robustjax.data import load_split_pair
    config = check_config(config, load_config("mmr"))
    data = load_split_pair("mnist")
    result = {"config": config, "machine": machine(), "date": datetime.date.today().isoformat(), "schemes": {}}
    t_all = time.perf_counter()
    for name, spec in config["schemes"].items():
        log(f"{name}: training {config['net']['model']} {config['net']['model_config']} with {spec} "
            f"(load {load1():.1f})")
        f, secs = train_scheme(name, spec, config, data, workdir, log)
        res = {"regularizers": [list(s) for s in spec], "train_s": secs, "load_after_train": load1()}
        res.update(evaluate_scheme(f, config, data, log, only))
        log(f"  test error {res['test_error']:.4f}")
        result["schemes"][name] = res
    result["total_s"] = time.perf_counter() - t_all
    return result


def merge(old: dict, new: dict, only) -> dict:
    """old with the attacks in `only` replaced by new's (ratios recomputed); the settings of those attacks and
    their run times in new's config; `reruns` lists what was replaced."""
    for name, r in new["schemes"].items():
        o = old["schemes"][name]
        o["attacks"].update(r["attacks"])
        add_ratios(o["attacks"], r["correct"])
    for label in only:
        if label in new["config"]:
            old["config"][label] = new["config"][label]
    old.setdefault("reruns", []).append(dict(attacks=list(only), total_s=new["total_s"], date=new["date"]))
    return old


def markdown(result: dict, command: str) -> str:
    cfg = result["config"]
    lines = [f"# MMR on MNIST: attacks vs the region attack on provably trained nets ({result['date']})", "",
             f"Machine: {result['machine']}; 2-core CPU shared with other jobs, run at nice 10; 1-minute load "
             f"given beside each time. Total {result['total_s'] / 60:.0f} min. Command: `{command}`.", ""]
    net = cfg["net"]
    lines += [f"Net: {net['model']} {net['model_config']} (the paper's FC1), {net['optimizer']} lr "
              f"{net['learning_rate']}, {net['schedule']} schedule, batch {net['batch_size']}, {net['epochs']} "
              f"epochs on {'all 60k' if not net['train_size'] else net['train_size']} MNIST training images. "
              "Schemes (regularizer terms added to the clean cross-entropy):", ""]
    for name, r in result["schemes"].items():
        lines.append(f"- {name}: {r['regularizers'] or 'none'}; trained in {r['train_s']:.0f} s "
                     f"(load {r['load_after_train']:.1f} at the end)")
    lines += ["", "Deviations from the paper (CPU budget): "
              f"{net['epochs']} epochs instead of 100, no lr drop; lambda and k_B fixed (the paper ramps lambda up "
              "over 10 epochs and lowers k_B from 10 % to 2 % of the hidden units); MMR is computed on the clean "
              "points and adversarial training adds CE at PGD points (robustjax's adversarial_training term: "
              "clean + adversarial loss) where the paper replaces half the batch by 40-step PGD points and "
              "regularizes the mixed batch; certified errors here are CROWN bounds (the paper: KW and MIP).", ""]
    if result.get("reruns"):
        lines += [f"Rerun on the same nets and merged: {r['attacks']} ({r['date']}, {r['total_s']:.0f} s)"
                  for r in result["reruns"]] + [""]
    eps = cfg["eps"]
    lines += [f"## Errors at l_inf eps = {eps}", "",
              f"Test error on the 10k test set; PGD error (lower bound of the robust error: {cfg['pgd']}) and "
              f"{cfg['certify']} certified error (upper bound: 1 - fraction verified by "
              f"robustjax.bounds.verified) on the first {cfg['n_eval']} test points.", "",
              "| scheme | test error | PGD robust error | certified robust error (upper bound) |", "|---|---|---|---|"]
    for name, r in result["schemes"].items():
        lines.append(f"| {name} | {100 * r['test_error']:.2f} % | {100 * r['pgd_error']:.1f} % | "
                     + (f"{100 * r['certified_error']:.1f} % |" if "certified_error" in r else "- |"))
    lines += ["", "Paper (methods.md Appendix A, MNIST FC1 l_inf 0.1, TE / LB / UB %, 100 epochs, MIP for the bounds): "
              "plain 1.44/93.0/100, MMR 2.11/22.5/24.9, MMR+at 2.04/14.0/14.1.", ""]
    cr = result.get("certified_run")
    if cr:
        lines += ["### Certified robust error by bound method", "",
                  f"1 - fraction verified by robustjax.bounds.verified (float32-sound margins) on the first {cr['n']} "
                  f"test points, per method and l_inf eps ({cr['date']}; seconds and 1-minute load per cell).", "",
                  "| scheme | method | " + " | ".join(f"eps {e}" for e in cr["eps"]) + " |",
                  "|---|---|" + "---|" * len(cr["eps"])]
        for name, r in result["schemes"].items():
            for method, cells in r.get("certified", {}).items():
                lines.append(f"| {name} | {method} | " + " | ".join(
                    f"{100 * cells[str(e)]['error']:.1f} % ({cells[str(e)]['seconds']:.0f} s, {cells[str(e)]['load']:.1f})"
                    for e in cr["eps"]) + " |")
        lines.append("")
    lines += ["## Minimal perturbations", "",
              f"First {cfg['n_attack']} test points; medians over the points the net classifies correctly. "
              "Ratio: per point region / attack over the points both break (median [10 %, 90 % quantiles]); "
              "'smaller': fraction of points where the region attack's distance is at least 0.1 % smaller. "
              f"Settings: DeepFool {cfg['deepfool']}, CW {cfg['cw']}, DDN {cfg['ddn']}, pgd_minimal defaults "
              f"{cfg['pgd_minimal'] or '(12 radii x 50 steps)'}, region {cfg['region']} with the library's "
              "starts (the best of DeepFool, DDN and minimal PGD, and the nearest differently classified training "
              f"image), {cfg['region_processes']} worker processes.", "",
              "| scheme | norm | attack | median | success | region / attack: median [q10, q90] | smaller | "
              "time s (load) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in result["schemes"].items():
        for k, a in r["attacks"].items():
            pr = a.get("region_ratio")
            ratio = "-" if pr is None else f"{pr['median']:.4f} [{pr['q10']:.3f}, {pr['q90']:.3f}] (n={pr['n']})"
            smaller = "-" if pr is None else f"{pr['smaller']:.2f}"
            lines.append(f"| {name} | l{a['p']} | {a['attack']} | {a['median']:.4f} | {a['success']:.2f} | {ratio} | "
                         f"{smaller} | {a['seconds']:.0f} ({a['load']:.1f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--out", default=None, help="folder for mmr.json")
    ap.add_argument("--md", default=None, help="markdown file for the table")
    ap.add_argument("--workdir", default=None, help="keep the trained nets here")
    ap.add_argument("--only", default=None, help="comma-separated attacks to (re)run on the nets in --workdir, "
                    "merged into the mmr.json in --out (errors at eps kept from it)")
    ap.add_argument("--certify-methods", default=None, help="comma-separated bound methods (ibp, crown-ibp, crown, "
                    "alpha-crown): certified errors of the nets in --workdir at --certify-eps, merged into the "
                    "mmr.json in --out")
    ap.add_argument("--certify-eps", default="0.02,0.05,0.1")
    ap.add_argument("--certify-n", type=int, default=200)
    args = ap.parse_args(argv)
    cfg = load_config("mmr", args.config)
    if (args.only or args.certify_methods) and not (args.out and args.workdir):
        ap.error("--only and --certify-methods need --workdir (the trained nets) and --out (the mmr.json to merge into)")
    known = sorted({label for labels in cfg["attacks"].values() for label in labels})
    if args.only and not set(args.only.split(",")) <= set(known):
        ap.error(f"--only takes attacks of the config, {known}; got {args.only!r}")
    from robustjax.bounds import METHODS
    if args.certify_methods and not set(args.certify_methods.split(",")) <= set(METHODS):
        ap.error(f"--certify-methods takes bound methods {list(METHODS)}; got {args.certify_methods!r}")
    if args.certify_methods:
        from robustjax.data import load_split_pair
        data = load_split_pair("mnist")
        old = json.loads((Path(args.out) / "mmr.json").read_text())
        methods, eps_list = args.certify_methods.split(","), [float(e) for e in args.certify_eps.split(",")]
        for name, spec in cfg["schemes"].items():
            f, _ = train_scheme(name, spec, cfg, data, args.workdir, print)
            old["schemes"][name]["certified"] = certify_methods(f, methods, eps_list, args.certify_n, data, print)
        old["certified_run"] = dict(date=datetime.date.today().isoformat(), n=args.certify_n, methods=methods,
                                    eps=eps_list, load_end=load1())
        (Path(args.out) / "mmr.json").write_text(json.dumps(old, indent=1, default=str))
        if args.md:
            Path(args.md).write_text(markdown(old, "nice -n 10 python scripts/mmr.py " + " ".join(
                argv if argv is not None else sys.argv[1:])))
        return True
    only = None if args.only is None else tuple(args.only.split(","))
    result = run(cfg, args.workdir, log=lambda s: print(s, flush=True), only=only)
    if only is not None:
        result = merge(json.loads((Path(args.out) / "mmr.json").read_text()), result, only)
    command = "nice -n 10 python scripts/mmr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "mmr.json").write_text(json.dumps(result, indent=1, default=str))
    md = markdown(result, command)
    if args.md:
        Path(args.md).write_text(md)
    print(md)
    return True


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
