"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv 2003.01690, Alg. 1), a budget attack in l2 and l_inf.

From x^(0) (uniform in the ball), with step size eta^(0) = 2 eps and momentum alpha = 0.75:

    z^(k+1) = P(x^(k) + eta^(k) s(grad L(x^(k))))            s: sign (l_inf) or g / ||g||_2 (l2)
    x^(k+1) = P(x^(k) + alpha (z^(k+1) - x^(k)) + (1 - alpha) (x^(k) - x^(k-1)))   (alpha = 1 at k = 0)

P projects onto ball ∩ box. At the checkpoints w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22,
p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06), the step size halves and the iterate restarts from the
point of highest loss x_max when (1) the loss rose in fewer than rho = 0.75 of the steps since the last
checkpoint, or (2) the step size was not halved at the last checkpoint and the best loss has not improved
since. Losses: cross-entropy ("ce") or DLR ("dlr", `losses.dlr`); with a target class, the targeted DLR
(`losses.dlr_targeted`) or -CE of the target. `apgd_targeted` is APGD-T: one targeted run per class among
the top n_targets of the clean logits, each on the points not yet broken.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import batching, losses, validate
from robustjax.attacks import steps as S
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import (AttackResult, Timer, as_box, check_inputs, check_norm, check_target,
                                      default_min_margin, finalize)
from robustjax.batching import map_batches
from robustjax.geometry import Box, margin, per_example

MOMENTUM = 0.75
RHO = 0.75
LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j steps) (0 < w_j < steps) at which the step size may halve:
    p_0 = 0, p_1 = 0.22, p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06)."""
    ps = [0.0, 0.22]
    while ps[-1] < 1.0:
        ps.append(ps[-1] + max(ps[-1] - ps[-2] - 0.03, 0.06))
    ws = sorted({math.ceil(q * steps - 1e-9) for q in ps[1:] if q < 1.0})
    return [w for w in ws if 0 < w < steps]


def _loss_fn(loss: str, targeted: bool):
    if loss == "ce":
        if targeted:
            return lambda logits, labels, target: -losses.softmax_cross_entropy(logits=logits, labels=target)
        return lambda logits, labels, target: losses.softmax_cross_entropy(logits=logits, labels=labels)
    if targeted:
        return lambda logits, labels, target: losses.dlr_targeted(logits=logits, labels=labels, target=target)
    return lambda logits, labels, target: losses.dlr(logits=logits, labels=labels)


def _run(logits_fn, x, labels, target, eps, box: Box, key, *, p, steps, loss, targeted):
    """One APGD run from a random start: (an adversarial point or the last iterate, found, calls)."""
    n = x.shape[0]
    loss_fn = _loss_fn(loss, targeted)
    project = S.project(p, box)
    marks = np.zeros(steps + 1, bool)
    since = np.zeros(steps + 1, np.int32)
    prev = 0
    for w in checkpoints(steps):
        marks[w], since[w], prev = True, w - prev, w
    marks, since = jnp.asarray(marks), jnp.asarray(since)

    def value_grad(z):
        def total(z):
            logits = logits_fn(z)
            return jnp.sum(loss_fn(logits, labels, target)), logits
        (_, logits), g = jax.value_and_grad(total, has_aux=True)(z)
        return loss_fn(logits, labels, target), g, -margin(logits, labels) >= default_min_margin(logits)

    x0 = project(S.uniform_in_ball(p)(key, x, eps), x, eps)
    l0, g0, adv0 = value_grad(x0)
    eta0 = 2.0 * eps
    init = dict(k=jnp.zeros((), jnp.int32), x=x0, x_prev=x0, l=l0, g=g0, eta=eta0,
                x_max=x0, l_max=l0, g_max=g0, l_max_last=l0, reduced_last=jnp.zeros((n,), bool),
                count=jnp.zeros((n,), jnp.int32), adv=jnp.where(per_example(adv0, x), x0, x), found=adv0,
                calls=jnp.ones((n,), jnp.int32))

    def body(s):
        active = ~s["found"]
        a = jnp.where(s["k"] == 0, 1.0, MOMENTUM).astype(x.dtype)
        z = project(s["x"] + per_example(s["eta"], x) * S.steepest(s["g"], p), x, eps)
        x_new = project(s["x"] + a * (z - s["x"]) + (1 - a) * (s["x"] - s["x_prev"]), x, eps)
        l_new, g_new, adv = value_grad(x_new)
        k = s["k"] + 1
        up = l_new > s["l_max"]
        x_max = jnp.where(per_example(up, x), x_new, s["x_max"])
        g_max = jnp.where(per_example(up, x), g_new, s["g_max"])
        l_max = jnp.where(up, l_new, s["l_max"])
        count = s["count"] + (l_new > s["l"])
        at = marks[k]
        halve = at & ((count < RHO * since[k]) | (~s["reduced_last"] & (s["l_max_last"] >= l_max)))
        back = per_example(halve, x)
        x_cur = jnp.where(back, x_max, x_new)
        x_prev = jnp.where(back, x_max, s["x"])
        keep = per_example(active, x)
        found_now = active & adv
        out = dict(k=k, x=jnp.where(keep, x_cur, s["x"]), x_prev=jnp.where(keep, x_prev, s["x_prev"]),
                   l=jnp.where(halve, l_max, l_new), g=jnp.where(back, g_max, g_new),
                   eta=jnp.where(halve, 0.5 * s["eta"], s["eta"]), x_max=x_max, l_max=l_max, g_max=g_max,
                   l_max_last=jnp.where(at, l_max, s["l_max_last"]),
                   reduced_last=jnp.where(at, halve, s["reduced_last"]),
                   count=jnp.where(at, 0, count),
                   adv=jnp.where(per_example(found_now, x), x_new, s["adv"]), found=s["found"] | found_now,
                   calls=s["calls"] + 2 * active)
        return out

    def cond(s):
        return (s["k"] < steps) & jnp.any(~s["found"])

    s = jax.lax.while_loop(cond, body, init)
    return s["adv"], s["found"], s["calls"]


_STATIC = ("p", "steps", "loss", "targeted", "restarts")


@jit_model(_STATIC)
def _apgd(logits_fn, x, labels, target, eps, lo, hi, key, *, p, steps, loss, targeted, restarts):
    def restart(carry, k):
        best, found, calls = carry
        adv, ok, c = _run(logits_fn, x, labels, target, eps, Box(lo, hi), k, p=p, steps=steps, loss=loss,
                          targeted=targeted)
        new = ok & ~found
        return (jnp.where(per_example(new, x), adv, best), found | ok, calls + jnp.where(found, 0, c)), None

    n = x.shape[0]
    init = (x, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32))
    (best, _, calls), _ = jax.lax.scan(restart, init, jax.random.split(key, restarts))
    return best, calls


def min_classes(loss: str, targeted: bool) -> int:
    """The classes a loss needs: DLR's denominator uses the 3rd largest logit (4th when targeted)."""
    return 4 if (loss == "dlr" and targeted) else 3 if loss == "dlr" else 2


def _check(p, loss, k, targeted):
    p = check_norm(p)
    if p not in (2.0, np.inf):
        raise ValueError(f"apgd supports p = 2 or inf, got {p}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    need = min_classes(loss, targeted)
    if k < need:
        raise ValueError(f"loss {loss!r}{' (targeted)' if targeted else ''} needs at least {need} classes, "
                         f"the model has {k}")
    return p


def _name(p, loss, targeted):
    return f"apgd-{'t' if targeted else loss}_l{'inf' if p == np.inf else 2}"


def apgd(logits_fn, x, labels, *, p, eps, key, box=None, loss: str = "ce", target=None, steps: int = 100,
         restarts: int = 1, batch_size: int | None = None, min_margin: float | None = None) -> AttackResult:
    """APGD, a budget attack (module docstring): a misclassified point within ||x_adv - x||_p <= eps.

    Args:
      logits_fn: batched `[batch, ...]` -> `[batch, K]` (a jit argument: `attacks/model_arg.py`).
      x: `[batch, ...]` in the box; labels `[batch]`; p: 2 or inf; eps: radius, scalar or `[batch]`;
        key: PRNG key (random starts). box: Box, (lo, hi) or None ([0, 1]).
      loss: "ce" or "dlr" (K >= 3; targeted K >= 4). target: None (untargeted) or `[batch]` int classes
        (targeted loss; success is still any misclassification). steps: iterations N per run; restarts:
        runs from new random starts (rows already broken skip later runs). min_margin: see `finalize`.

    Returns:
      AttackResult: success where a point with ||x_adv - x||_p <= eps is misclassified, distance that
      point's (not eps). model_calls: forward + backward passes (2 per step and per start).
    """
    key = validate.key(key)
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    targeted = target is not None
    p = _check(p, loss, logits.shape[1], targeted)
    box = as_box(box, x)
    eps = validate.per_example(eps, x.shape[0], "eps").astype(np.dtype(x.dtype))
    if targeted:
        target = check_target(target, labels, logits.shape[1])
    else:
        target = np.asarray(labels)
    opts = dict(p=p, steps=validate.positive_int(steps, "steps"), loss=loss, targeted=targeted,
                restarts=validate.positive_int(restarts, "restarts"))
    run = lambda xb, yb, tb, eb, lob, hib, kb: _apgd(logits_fn, xb, yb, tb, eb, lob, hib, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, target, eps, box.lo, box.hi), batch_size=batch_size, key=key)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=_name(p, loss, targeted), min_margin=min_margin, push_outward=False)


def top_targets(logits, labels, n_targets: int) -> np.ndarray:
    """The classes with the 2nd, 3rd, ... (n_targets + 1)-th largest clean logits other than the label,
    `[batch, K]` -> `[n_targets, batch]` (n_targets capped at K - 1)."""
    z = np.asarray(logits, np.float64).copy()
    z[np.arange(len(z)), np.asarray(labels)] = -np.inf
    order = np.argsort(-z, axis=1, kind="stable")
    return order[:, :min(n_targets, z.shape[1] - 1)].T.astype(np.int32)


def on_rows(attack, logits_fn, x, labels, rows, box: Box, *, per_row: dict | None = None, **kw) -> AttackResult:
    """attack(logits_fn, x[rows], labels[rows], box=box[rows], **per_row[rows], **kw), run on the
    `batching.bucket` of rows and cut back to len(rows) rows (time_s and model_calls of the padding are dropped)."""
    m, n = len(rows), x.shape[0]
    idx = batching.bucket(rows, n, kw.get("batch_size"))
    lo, hi = np.asarray(box.lo), np.asarray(box.hi)
    extra = {k: np.asarray(v)[idx] for k, v in (per_row or {}).items()}
    r = attack(logits_fn, np.asarray(x)[idx], np.asarray(labels)[idx], box=Box(lo[idx], hi[idx]), **extra, **kw)
    cut = {f: getattr(r, f)[:m] for f in ("x_adv", "distance", "success", "label_adv", "model_calls", "time_s")}
    return r._replace(**cut, info=None)


def targeted_cascade(attack, logits_fn, x, labels, logits, n_targets, method, *, box: Box, key, eps=None,
                     **kw) -> AttackResult:
    """Runs attack(..., target=t, **kw) once per target class among the top n_targets (`top_targets`) and
    merges the rows into one result: with eps (a budget attack) each run sees only the rows not yet broken
    (`on_rows`); without eps (a minimal attack) every run sees every correctly classified row and the
    closest point is kept."""
    n = x.shape[0]
    out = finalize(logits_fn, x, labels, x, p=kw.get("p"), box=box, method=method)
    x_adv, dist, succ, label_adv = out.x_adv.copy(), out.distance.copy(), out.success.copy(), out.label_adv.copy()
    calls, time_s = np.zeros(n, np.int64), out.time_s.copy()
    per_row = {} if eps is None else dict(eps=np.broadcast_to(np.asarray(eps, np.float64), (n,)))
    for i, t in enumerate(top_targets(logits, labels, n_targets) if n else []):
        rows = np.flatnonzero(~succ if eps is not None else dist > 0)
        if not len(rows):
            break
        r = on_rows(attack, logits_fn, x, labels, rows, box, per_row=dict(per_row, target=t),
                    key=jax.random.fold_in(key, i), **kw)
        better = r.distance < dist[rows]
        take = rows[better]
        x_adv[take], dist[take], succ[take], label_adv[take] = (r.x_adv[better], r.distance[better],
                                                                r.success[better], r.label_adv[better])
        calls[rows] += r.model_calls
        time_s[rows] += r.time_s
    return out._replace(x_adv=x_adv, distance=dist, success=succ, label_adv=label_adv, model_calls=calls,
                        time_s=time_s, method=method)


def apgd_targeted(logits_fn, x, labels, *, p, eps, key, box=None, n_targets: int = 9, loss: str = "dlr",
                  steps: int = 100, restarts: int = 1, batch_size: int | None = None,
                  min_margin: float | None = None) -> AttackResult:
    """APGD-T, a budget attack: `apgd` with the targeted loss toward each of the n_targets classes with
    the largest clean logits (after the label), in that order, each on the points not yet broken.

    Args: as `apgd`, plus n_targets (>= 1, capped at K - 1); loss "dlr" (targeted DLR, K >= 4) or "ce".
    Returns: AttackResult (as `apgd`); model_calls summed over the targeted runs.
    """
    key = validate.key(key)
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    p = _check(p, loss, logits.shape[1], True)
    box = as_box(box, x)
    validate.per_example(eps, x.shape[0], "eps")
    n_targets = validate.positive_int(n_targets, "n_targets")
    return targeted_cascade(apgd, logits_fn, x, labels, logits, n_targets, _name(p, loss, True), p=p, eps=eps,
                            key=key, box=box, loss=loss, steps=steps, restarts=restarts, batch_size=batch_size,
                            min_margin=min_margin)
