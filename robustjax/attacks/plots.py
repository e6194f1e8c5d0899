"""Figures for attack results: robust accuracy versus eps, and adversarial examples with their
perturbations for p = 1, 2, inf side by side (the layout of the talk's slides: original,
perturbation, adversarial example with the predicted label, one row per norm), and the region
attack in action (its distance over the regions sampled and its point at a few steps).

All return a matplotlib Figure and never call `show`; use the Agg backend on headless machines.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from robustjax.attacks.result import AttackResult, robust_accuracy_curve


def _norm_name(p) -> str:
    if p is None:
        return "spatial"
    return "l" + ("inf" if float(p) == np.inf else str(int(p)))


def plot_robust_accuracy(results: Mapping[str, AttackResult | np.ndarray], *, eps=None, p=None,
                         ax=None, title: str | None = None):
    """Robust accuracy (fraction with distance > eps) against eps, one curve per attack.

    Args:
      results: name -> AttackResult or distances `[n]` (all on the same points and norm).
      eps: grid `[m]`; default 200 points from 0 to the largest finite distance.
      p: norm for the axis label (taken from the first AttackResult if omitted; None: spatial).
      ax: matplotlib Axes to draw into (a new figure otherwise).
    Returns:
      the Figure.
    """
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_robust_accuracy needs at least one result")
    dists = {k: np.asarray(v.distance if isinstance(v, AttackResult) else v, np.float64)
             for k, v in results.items()}
    if p is None:
        p = next((v.p for v in results.values() if isinstance(v, AttackResult)), None)
    if eps is None:
        finite = np.concatenate([d[np.isfinite(d)] for d in dists.values()] + [np.zeros(1)])
        eps = np.linspace(0.0, max(float(finite.max()), 1e-12) * 1.02, 200)
    eps = np.asarray(eps, np.float64)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    for name, d in dists.items():
        ax.plot(eps, robust_accuracy_curve(d, eps), label=name)
    ax.set_xlabel(f"eps ({_norm_name(p)})" if p is not None else "eps (spatial: range scale)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _image(a):
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        if side * side == a.size:
            a = a.reshape(side, side)
        else:
            a = a[None, :]
    return a


def plot_adversarial_examples(x, labels, results: Sequence[AttackResult], *, indices: Sequence[int] = (0,),
                              class_names: Sequence[str] | None = None, box=(0.0, 1.0)):
    """For each example index and each result (e.g. one per norm p = 1, 2, inf): the original with
    its label, the perturbation x_adv - x (diverging colors, symmetric scale, its lp norm in the
    title) and the adversarial example with the model's label at it.

    Args:
      x: `[n, ...]` the inputs the results were computed on; labels: `[n]`.
      results: AttackResults on x (rows = results x indices).
      indices: which examples to show. class_names: optional names for the labels.
      box: (lo, hi) for the image color range.
    Returns:
      the Figure (len(indices) * len(results) rows, 3 columns).
    """
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_adversarial_examples needs at least one result")
    x = np.asarray(x)
    labels = np.asarray(labels)
    name = (lambda c: str(class_names[int(c)])) if class_names is not None else (lambda c: str(int(c)))
    rows = [(i, r) for i in indices for r in results]
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.6, 2.2 * len(rows)), squeeze=False)
    for row, (i, r) in zip(axes, rows):
        delta = np.asarray(r.x_adv[i]) - x[i]
        m = float(np.max(np.abs(delta))) or 1.0
        _show(row[0], x[i], box)
        row[0].set_title(f"original: {name(labels[i])}", fontsize=9)
        _show_delta(row[1], delta, m)
        dist = r.distance[i]
        row[1].set_title(f"{_norm_name(r.p)} perturbation, {dist:.3g}" if np.isfinite(dist)
                         else f"{_norm_name(r.p)}: none found", fontsize=9)
        _show(row[2], r.x_adv[i], box)
        method = f" ({r.method})" if r.method and len(r.method) <= 24 else ""
        row[2].set_title(f"adversarial: {name(r.label_adv[i])}{method}", fontsize=8)
        for a in row:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    return fig


def _show(ax, a, box):
    """One image: gray (`[h, w]`, `[h, w, 1]`, flat square) in gray levels, color `[h, w, 3]` as RGB, in box."""
    lo, hi = box
    a = _image(a)
    if a.ndim == 3:
        ax.imshow(np.clip((a - lo) / (hi - lo), 0.0, 1.0))
    else:
        ax.imshow(a, cmap="gray", vmin=lo, vmax=hi)


def _show_delta(ax, delta, m):
    """A perturbation on the symmetric scale [-m, m]: diverging colors (gray images), or RGB around mid-gray."""
    delta = _image(delta)
    if delta.ndim == 3:
        ax.imshow(np.clip(0.5 + 0.5 * delta / m, 0.0, 1.0))
    else:
        ax.imshow(delta, cmap="seismic", vmin=-m, vmax=m)


def plot_attack_in_action(x, result: AttackResult, *, index: int = 0, steps: Sequence[int] | None = None,
                          labels=None, class_names: Sequence[str] | None = None, box=(0.0, 1.0)):
    """The region attack at work on one example (the talk's "the attack in action"): left, the best l_p
    distance against the regions sampled (info["trajectory"], the start and the shown steps marked); then the original,
    the best adversarial point after each shown step (info["snapshots"]) and the final x_adv, each titled
    with its step and l_p distance, above its perturbation (second row, one symmetric color scale for all,
    stated under the original: the perturbation shrinking is visible as it fades).

    Args:
      x: `[n, ...]` the inputs the result was computed on: gray (`[n, h, w, 1]`, `[n, h, w]`, flat square)
        or color `[n, h, w, 3]`.
      result: an AttackResult of `region(..., snapshots=...)` on x (info: trajectory, snapshots,
        snapshot_regions).
      index: which example. steps: which recorded steps to show (default all of them).
      labels: optional `[n]` true labels (the original's title); class_names: optional names for labels.
      box: (lo, hi) for the image color range.
    Returns:
      the Figure: the curve, then 2 * len(steps) + 3 image axes (a step without a point yet, NaN, is an
      empty panel).
    """
    import matplotlib.pyplot as plt

    info = result.info or {}
    if "snapshots" not in info or "trajectory" not in info:
        raise ValueError("plot_attack_in_action needs a region result run with snapshots (info['snapshots'], "
                         "info['trajectory']): region(..., snapshots=(1, 10, 50))")
    x = np.asarray(x)
    n = x.shape[0]
    if not -n <= index < n:
        raise ValueError(f"index must be in [-{n}, {n}), got {index}")
    recorded = [int(k) for k in np.asarray(info["snapshot_regions"])[index]]
    steps = recorded if steps is None else [int(k) for k in steps]
    missing = [k for k in steps if k not in recorded]
    if missing:
        raise ValueError(f"steps {missing} were not recorded; the result has snapshots after {recorded} regions")
    name = (lambda c: str(class_names[int(c)])) if class_names is not None else (lambda c: str(int(c)))
    x0 = x[index].astype(np.float64)
    snaps = np.asarray(info["snapshots"])[index]
    points = [snaps[recorded.index(k)].astype(np.float64) for k in steps]
    final = np.asarray(result.x_adv[index], np.float64)
    found = bool(result.success[index])
    deltas = [z - x0 for z in points + ([final] if found else []) if np.all(np.isfinite(z))]
    m = max([float(np.max(np.abs(d))) for d in deltas] + [0.0]) or 1.0
    norm = _norm_name(result.p)

    def dist(z):
        return float(np.linalg.norm((z - x0).ravel(), ord=result.p))

    cols = len(steps) + 2
    fig = plt.figure(figsize=(3.6 + 1.6 * cols, 3.7))
    grid = fig.add_gridspec(2, cols + 1, width_ratios=[2.6] + [1.0] * cols)
    curve = fig.add_subplot(grid[:, 0])
    traj = np.asarray(info["trajectory"])[index]
    regions = np.arange(len(traj))
    curve.plot(regions, traj, drawstyle="steps-post", color="C0")
    if np.isfinite(traj[0]):
        curve.plot([0], [traj[0]], "s", color="C2", ms=4, label="start")
    shown = [k for k, z in zip(steps, points) if np.all(np.isfinite(z))]
    curve.plot(shown, traj[shown], "o", color="C3", ms=4, label="snapshots")
    if found:
        curve.plot([regions[-1]], [result.distance[index]], "*", color="k", ms=8, label="final x_adv")
    curve.set_ylim(bottom=0.0)                  # the improvement at its true scale
    curve.set_xlabel("regions sampled")
    curve.set_ylabel(f"best {norm} distance")
    curve.set_title("distance while the regions are sampled", fontsize=9)
    curve.grid(alpha=0.3)
    curve.legend(fontsize=7)
    panels = [(f"original{': ' + name(labels[index]) if labels is not None else ''}", x0, None)]
    panels += [(f"after {k} region{'s' if k != 1 else ''}", z, dist(z)) for k, z in zip(steps, points)]
    panels += [(f"final: {name(result.label_adv[index])}", final, float(result.distance[index]))] if found else \
        [("final: none found", None, None)]
    for col, (title, z, d) in enumerate(panels, start=1):
        top, bottom = fig.add_subplot(grid[0, col]), fig.add_subplot(grid[1, col])
        for a in (top, bottom):
            a.set_xticks([])
            a.set_yticks([])
        if col == 1:
            _show(top, z, box)
            top.set_title(title, fontsize=8)
            bottom.axis("off")
            bottom.text(0.5, 0.5, f"perturbations\nbelow, color\nscale \u00b1{m:.3g}", ha="center", va="center",
                        fontsize=8, transform=bottom.transAxes)
            continue
        if z is None or not np.all(np.isfinite(z)):
            top.set_title(f"{title}:\nnone yet" if z is not None else title, fontsize=8)
            top.axis("off")
            bottom.axis("off")
            continue
        _show(top, z, box)
        top.set_title(f"{title}\n{norm} = {d:.3g}", fontsize=8)
        _show_delta(bottom, z - x0, m)
    fig.tight_layout()
    return fig
