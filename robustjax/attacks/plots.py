"""Figures for attack results: robust accuracy versus eps, and adversarial examples with their
perturbations for p = 1, 2, inf side by side (the layout of the talk's slides: original,
perturbation, adversarial example with the predicted label, one row per norm).

Both return a matplotlib Figure and never call `show`; use the Agg backend on headless machines.
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
    lo, hi = box
    for row, (i, r) in zip(axes, rows):
        delta = np.asarray(r.x_adv[i]) - x[i]
        m = float(np.max(np.abs(delta))) or 1.0
        row[0].imshow(_image(x[i]), cmap="gray", vmin=lo, vmax=hi)
        row[0].set_title(f"original: {name(labels[i])}", fontsize=9)
        row[1].imshow(_image(delta), cmap="seismic", vmin=-m, vmax=m)
        dist = r.distance[i]
        row[1].set_title(f"{_norm_name(r.p)} perturbation, {dist:.3g}" if np.isfinite(dist)
                         else f"{_norm_name(r.p)}: none found", fontsize=9)
        row[2].imshow(_image(r.x_adv[i]), cmap="gray", vmin=lo, vmax=hi)
        method = f" ({r.method})" if r.method and len(r.method) <= 24 else ""
        row[2].set_title(f"adversarial: {name(r.label_adv[i])}{method}", fontsize=8)
        for a in row:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    return fig
