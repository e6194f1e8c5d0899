"""An AutoAttack-style standard evaluation (Croce & Hein, ICML 2020): robust accuracy at eps as the worst
case per point over a fixed cascade of attacks, APGD-CE, APGD-T, FAB-T and Square by default, each run
only on the points still robust after the ones before it.

Before and after the attacks it checks the signs of an evaluation gone wrong, as AutoAttack does, and
warns: outputs that look like probabilities (attacks expect logits), a randomized model (two forward
passes differ), zero input gradients of the margin at correctly classified points (masked gradients), and
the black-box Square attack breaking points that every white-box attack before it missed (a sign of
gradient masking). `StandardEvaluation.to_json` gives a RobustBench-style record.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import losses, validate
from robustjax.attacks.apgd import apgd, apgd_targeted, min_classes, on_rows
from robustjax.attacks.fab import fab, fab_targeted
from robustjax.attacks.result import Timer, as_box, check_inputs, check_norm
from robustjax.attacks.square import square
from robustjax.batching import map_batches
from robustjax.geometry import lp_norm, margin

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
KNOWN = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
NORM_NAMES = {1.0: "L1", 2.0: "L2", np.inf: "Linf"}


class StandardEvaluation(NamedTuple):
    """The outcome of `standard_evaluation`, one row per point where shapes say `[n]`.

    clean_accuracy, robust_accuracy: fractions of the n points (robust: correctly classified and not
      broken by any attack within eps). robust_accuracy_after: attack -> robust accuracy after it ran.
    clean_correct, robust: `[n]` bool. broken_by: `[n]` str, "" for robust points, "clean" for points
      misclassified without attack, else the name of the first attack that broke it.
    x_adv: `[n, ...]` the adversarial point (x for robust and misclassified points); distance: `[n]`
      ||x_adv - x||_p (0 for misclassified points, inf for robust ones); margin: `[n]` f_y - max_{j != y} f_j
      at x_adv (negative where broken).
    model_calls: `[n]` passes spent on each point by all attacks. time_s: attack -> seconds.
    flags: the checks' findings (probabilities, randomized: bool; zero_gradients, square_after_white_box:
      numbers of points); warnings: their messages. p, eps (scalar or `[n]`), attacks, seed: the setup.
    """
    clean_accuracy: float
    robust_accuracy: float
    robust_accuracy_after: dict
    clean_correct: np.ndarray
    robust: np.ndarray
    broken_by: np.ndarray
    x_adv: np.ndarray
    distance: np.ndarray
    margin: np.ndarray
    model_calls: np.ndarray
    time_s: dict
    flags: dict
    warnings: tuple
    p: float
    eps: float | np.ndarray
    attacks: tuple
    seed: object

    def to_json(self) -> dict:
        """A JSON-serializable dict in RobustBench's spirit: clean_accuracy, robust_accuracy, eps, norm,
        attacks, seed, robust_accuracy_after, flags, warnings, time_s and per point (points: index,
        clean_correct, robust, broken_by (None where robust), margin, distance (None where inf))."""
        eps = self.eps.tolist() if isinstance(self.eps, np.ndarray) else float(self.eps)
        points = [dict(index=i, clean_correct=bool(self.clean_correct[i]), robust=bool(self.robust[i]),
                       broken_by=str(self.broken_by[i]) or None, margin=float(self.margin[i]),
                       distance=float(self.distance[i]) if np.isfinite(self.distance[i]) else None)
                  for i in range(len(self.robust))]
        return dict(clean_accuracy=float(self.clean_accuracy), robust_accuracy=float(self.robust_accuracy),
                    eps=eps, norm=NORM_NAMES[self.p], attacks=list(self.attacks), seed=self.seed,
                    n_points=len(self.robust),
                    robust_accuracy_after={k: float(v) for k, v in self.robust_accuracy_after.items()},
                    flags={k: (bool(v) if isinstance(v, (bool, np.bool_)) else int(v)) for k, v in self.flags.items()},
                    warnings=list(self.warnings), time_s={k: float(v) for k, v in self.time_s.items()},
                    points=points)


def _attack_fns(p, *, apgd_steps, n_targets, fab_steps, n_queries, restarts) -> dict[str, Callable]:
    common = dict(p=p)
    return {
        "apgd-ce": lambda f, x, y, **kw: apgd(f, x, y, loss="ce", steps=apgd_steps, restarts=restarts, **common, **kw),
        "apgd-dlr": lambda f, x, y, **kw: apgd(f, x, y, loss="dlr", steps=apgd_steps, restarts=restarts, **common,
                                               **kw),
        "apgd-t": lambda f, x, y, **kw: apgd_targeted(f, x, y, n_targets=n_targets, steps=apgd_steps, **common, **kw),
        "fab": lambda f, x, y, **kw: fab(f, x, y, steps=fab_steps, restarts=restarts, **common, **kw),
        "fab-t": lambda f, x, y, **kw: fab_targeted(f, x, y, n_targets=n_targets, steps=fab_steps, **common, **kw),
        "square": lambda f, x, y, **kw: square(f, x, y, n_queries=n_queries, **common, **kw),
    }


def _seed(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key)), int(key)
    key = validate.key(key)
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return key, np.asarray(data).tolist()


def _zero_gradients(logits_fn, x, labels, rows, batch_size) -> int:
    """The number of rows where the input gradient of the margin loss is exactly zero."""
    if not len(rows):
        return 0

    def grad_zero(xb, yb):
        g = jax.grad(lambda z: jnp.sum(losses.margin(logits=logits_fn(z), labels=yb)))(xb)
        return jnp.all(g.reshape(g.shape[0], -1) == 0, axis=1)
    return int(np.sum(map_batches(grad_zero, (x[rows], labels[rows]), batch_size=batch_size)))


def standard_evaluation(logits_fn, x, labels, *, p, eps, key, box=None, attacks=STANDARD, apgd_steps: int = 100,
                        n_targets: int = 9, fab_steps: int = 100, n_queries: int = 5000, restarts: int = 1,
                        batch_size: int | None = None, warn: bool = True) -> StandardEvaluation:
    """Robust accuracy at eps under the cascade `attacks` (module docstring), AutoAttack's standard version
    by default: APGD-CE (apgd_steps, restarts), APGD-T (n_targets targets, targeted DLR), FAB-T (n_targets,
    fab_steps, thresholded at eps), Square (n_queries).

    Args:
      logits_fn: batched `[batch, ...]` -> `[batch, K]` (K >= 4 for the targeted attacks; `model_arg`).
      x: `[n, ...]` in the box; labels `[n]`; p: 2 or inf (1 only with "fab"/"fab-t" alone); eps: scalar or
        `[n]`; key: a jax.random key or an int seed (recorded in the result). box: Box, (lo, hi) or None.
      attacks: names from KNOWN, run in this order: "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square".
      apgd_steps, n_targets, fab_steps, n_queries, restarts: the attacks' budgets (the published defaults).
      batch_size: rows per compiled batch. warn: also emit the checks' findings as UserWarnings.

    Returns:
      StandardEvaluation. Every broken point was re-verified by its attack's `finalize` (misclassified,
      within eps, in the box); robust means only that none of these attacks found an adversarial point.
    """
    p = check_norm(p)
    key, seed = _seed(key)
    attacks = tuple(attacks)
    unknown = [a for a in attacks if a not in KNOWN]
    if unknown or not attacks:
        raise ValueError(f"attacks must be a non-empty sequence of {KNOWN}, got {attacks!r}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*look like probabilities.*")
        x, labels, logits = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    n = x.shape[0]
    K = logits.shape[1]
    need = {"apgd-t": min_classes("dlr", True), "apgd-dlr": min_classes("dlr", False)}
    short = [a for a in attacks if K < need.get(a, 2)]
    if short:
        raise ValueError(f"attacks {short} need at least {max(need[a] for a in short)} classes, the model has {K}: "
                         f"leave them out of attacks")
    eps_rows = validate.per_example(eps, n, "eps")
    fns = _attack_fns(p, apgd_steps=validate.positive_int(apgd_steps, "apgd_steps"),
                      n_targets=validate.positive_int(n_targets, "n_targets"),
                      fab_steps=validate.positive_int(fab_steps, "fab_steps"),
                      n_queries=validate.positive_int(n_queries, "n_queries"),
                      restarts=validate.positive_int(restarts, "restarts"))
    x_np, y_np, logits = np.asarray(x), np.asarray(labels), np.asarray(logits)
    correct = np.argmax(logits, -1) == y_np
    messages = []
    flags = dict(probabilities=bool(n and logits.shape[1] > 1 and np.all(logits >= 0)
                                    and np.allclose(logits.sum(-1), 1.0, atol=1e-4)))
    if flags["probabilities"]:
        messages.append("the model's outputs are non-negative and sum to 1: they look like probabilities; the "
                        "attacks expect logits (drop the final softmax), their losses saturate on probabilities")
    flags["randomized"] = bool(n and not np.array_equal(np.asarray(logits_fn(x)), np.asarray(logits_fn(x))))
    if flags["randomized"]:
        messages.append("two forward passes on the same inputs differ: the model is randomized, and a "
                        "deterministic evaluation underestimates its attack surface (use EOT attacks)")
    flags["zero_gradients"] = _zero_gradients(logits_fn, x, labels, np.flatnonzero(correct), batch_size)
    if flags["zero_gradients"]:
        messages.append(f"the input gradient of the margin is exactly zero at {flags['zero_gradients']} of "
                        f"{int(correct.sum())} correctly classified points: gradients may be masked (e.g. a "
                        "quantized or non-differentiable input layer), and the gradient attacks cannot move")

    robust = correct.copy()
    broken_by = np.where(correct, "", "clean").astype(object)
    x_adv = x_np.copy()
    calls = np.zeros(n, np.int64)
    after, times = {}, {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*look like probabilities.*")
        for i, name in enumerate(attacks):
            rows = np.flatnonzero(robust)
            times[name] = 0.0
            if len(rows):
                with Timer() as t:
                    r = on_rows(fns[name], logits_fn, x_np, y_np, rows, box, per_row=dict(eps=eps_rows),
                                key=jax.random.fold_in(key, i), batch_size=batch_size)
                times[name] = t.seconds
                hit = r.success & (r.distance <= eps_rows[rows] * (1 + 1e-6) + 1e-7)
                robust[rows[hit]] = False
                broken_by[rows[hit]] = name
                x_adv[rows[hit]] = r.x_adv[hit]
                calls[rows] += r.model_calls
            after[name] = float(robust.mean()) if n else 0.0
    if "square" in attacks and any(a in WHITE_BOX for a in attacks[:attacks.index("square")]):
        flags["square_after_white_box"] = int(np.sum(broken_by == "square"))
        if flags["square_after_white_box"]:
            messages.append(f"the black-box Square attack broke {flags['square_after_white_box']} points that "
                            "the white-box attacks before it missed: a sign of gradient masking, robust "
                            "accuracy may be overestimated")
    if warn:
        for m in messages:
            warnings.warn(m, UserWarning, stacklevel=2)
    final = map_batches(lambda zb, yb: margin(logits_fn(zb), yb), (x_adv, y_np), batch_size=batch_size) \
        if n else np.zeros((0,), np.float32)
    distance = np.asarray(lp_norm(jnp.asarray((x_adv - x_np).reshape(n, -1)), p), np.float64) if n else np.zeros(0)
    distance = np.where(robust, np.inf, distance)
    return StandardEvaluation(
        clean_accuracy=float(correct.mean()) if n else 0.0, robust_accuracy=float(robust.mean()) if n else 0.0,
        robust_accuracy_after=after, clean_correct=correct, robust=robust, broken_by=broken_by.astype(str),
        x_adv=x_adv, distance=distance, margin=np.asarray(final, np.float64), model_calls=calls, time_s=times,
        flags=flags, warnings=tuple(messages), p=p, eps=float(eps_rows[0]) if np.ndim(eps) == 0 and n else eps_rows,
        attacks=attacks, seed=seed)
