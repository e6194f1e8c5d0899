"""Spatial attacks: the worst rotation and translation of an image within a range.

Engstrom, Tran, Tsipras, Schmidt, Madry, "Exploring the Landscape of Spatial Robustness"
(arXiv:1712.02779, cited in the talk): rotations in [-30, 30] degrees and translations of up to
3 pixels already fool standard MNIST and CIFAR-10 networks; an exhaustive grid over the range is a
much stronger attack than a first-order search on the three parameters, because the loss is not
concave in them.

The transformation (`rotate_translate`) is bilinear interpolation, differentiable in the image and
in the parameters:

  out(p) = x(c + R(-angle) (p - c - shift)),   c = ((H - 1) / 2, (W - 1) / 2) (the image center),

so the content is rotated by `angle` degrees counter-clockwise as displayed (rows point down) about
the center, then moved by `shift = (dy, dx)` pixels (dy > 0 down, dx > 0 right). Pixels that come
from outside the image are 0 (`padding="zeros"`, black as in Engstrom et al.) or the nearest border
pixel (`padding="edge"`). With zero padding an image in [0, 1] stays in [0, 1]; results are clipped to
the box anyway and re-verified with the model.

Magnitude of a transformation (the `distance` of a result): the l_inf norm of the parameters
normalized by the range,

  m(angle, dy, dx) = max(|angle| / max_angle, |dy| / max_shift, |dx| / max_shift)  in [0, 1],

so `m <= s` means "inside the range scaled by s", and `robust_accuracy_curve(result.distance, s)`
is the robust accuracy against the range s * (max_angle, max_shift) (exact for the grid attack when
the grid restricted to the smaller range is the attack's grid there, e.g. s = k / (num_shifts // 2)).

Results are `SpatialResult`, a NamedTuple with the fields of `AttackResult` in the same order (so
`robust_accuracy_curve`, `best_of` among spatial results, and code that reads `x_adv`, `distance`,
`success`, `label_adv`, `model_calls`, `time_s` work unchanged) plus `angle`, `shift` and `margin`.
`AttackResult` cannot carry the transformation parameters, which are the point of the attack, hence
the separate type; `.as_attack_result()` drops them. `p` is `np.nan`: the distance is not an l_p
norm in input space, and `best_of` refuses to mix spatial and l_p results.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.attacks.result import AttackResult, Box, check_inputs, clip_to_box

PADDINGS = ("zeros", "edge")
CRITERIA = ("magnitude", "margin")


class SpatialResult(NamedTuple):
    """One row per example; the first eight fields are those of `AttackResult`.

    x_adv: `[batch, H, W, C]` the transformed image (clipped to the box) where success, else x.
    distance: `[batch]` normalized magnitude m in [0, 1] of the transformation (module docstring);
      0 for inputs the model already misclassifies; inf where no misclassifying transformation was found.
    success: `[batch]` bool, re-checked with the model: argmax f(x_adv) != label.
    label_adv: `[batch]` argmax f(x_adv).
    model_calls: `[batch]` forward plus backward passes spent per example.
    time_s: `[batch]` wall time per example (the batch time divided evenly).
    p: np.nan (the distance is a magnitude in parameter space, not an l_p norm of x_adv - x).
    method: "spatial_grid" or "spatial_first_order".
    angle: `[batch]` degrees, the chosen transformation: the misclassifying one of smallest magnitude
      (ties: lowest margin) where success; otherwise the one with the lowest margin found (so the
      worst case is known even where the model survives; x_adv is then x). 0 for misclassified inputs.
    shift: `[batch, 2]` pixels (dy down, dx right) of the same transformation.
    margin: `[batch]` f_y - max_{j != y} f_j at that transformation (negative: misclassified).
    """
    x_adv: np.ndarray
    distance: np.ndarray
    success: np.ndarray
    label_adv: np.ndarray
    model_calls: np.ndarray
    time_s: np.ndarray
    p: float
    method: str
    angle: np.ndarray
    shift: np.ndarray
    margin: np.ndarray

    @property
    def misclassified(self) -> np.ndarray:
        """Examples the model got wrong before any attack (distance 0)."""
        return self.success & (self.distance == 0)

    def as_attack_result(self) -> AttackResult:
        """The plain `AttackResult` (the transformation parameters dropped)."""
        return AttackResult(*self[:8])


# ----------------------------------------------------------------------------- the transformation

def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def bilinear_sample(image, rows, cols, *, padding: str = "zeros"):
    """image `[H, W, C]` sampled at real coordinates rows, cols `[...]` -> `[..., C]`.

    Bilinear interpolation between the four neighbouring pixels; differentiable in the image and (almost
    everywhere) in the coordinates. Outside the image: 0 (`zeros`) or the nearest pixel (`edge`).
    """
    _check_padding(padding)
    h, w = image.shape[0], image.shape[1]
    r0, c0 = jnp.floor(rows), jnp.floor(cols)
    wr, wc = rows - r0, cols - c0
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)

    def tap(r, c):
        rc, cc = jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)
        v = image[rc, cc]
        if padding == "zeros":
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            v = jnp.where(inside[..., None], v, 0.0)
        return v

    wr, wc = wr[..., None], wc[..., None]
    return ((1 - wr) * (1 - wc) * tap(r0, c0) + (1 - wr) * wc * tap(r0, c0 + 1)
            + wr * (1 - wc) * tap(r0 + 1, c0) + wr * wc * tap(r0 + 1, c0 + 1))


def rotate_translate(image, angle, shift, *, padding: str = "zeros"):
    """One image `[H, W, C]` rotated by `angle` degrees (counter-clockwise as displayed) about its
    center, then shifted by `shift` = (dy, dx) pixels (down, right); bilinear, `[H, W, C]` out.

    Angle 0 and integer shifts reproduce x exactly (integer shifts with zero fill); 90 degrees on a
    square image is `np.rot90(image)` up to float rounding of cos(pi/2).
    """
    h, w = image.shape[0], image.shape[1]
    theta = jnp.deg2rad(angle)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    ii, jj = jnp.meshgrid(jnp.arange(h, dtype=image.dtype), jnp.arange(w, dtype=image.dtype), indexing="ij")
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    a = ii - ci - shift[0]
    b = jj - cj - shift[1]
    # inverse map R(-theta) in (row, col) coordinates; R(theta) = [[cos, -sin], [sin, cos]]
    rows = cos * a + sin * b + ci
    cols = -sin * a + cos * b + cj
    return bilinear_sample(image, rows, cols, padding=padding)


def transform_images(x, angle, shift, *, padding: str = "zeros"):
    """Batched `rotate_translate`: x `[batch, H, W, C]`, angle `[batch]` degrees, shift `[batch, 2]`
    pixels -> `[batch, H, W, C]`."""
    _check_images(x)
    return jax.vmap(functools.partial(rotate_translate, padding=padding))(x, angle, shift)


@functools.partial(jax.jit, static_argnames=("padding", "box"))
def _transform_clip(x, angle, shift, *, padding, box):
    return clip_to_box(transform_images(x, angle, shift, padding=padding), Box(*box))


def _check_images(x):
    if x.ndim != 4:
        raise ValueError(f"spatial transformations take NHWC images [batch, H, W, C]; got shape {x.shape}")


def magnitude(angle, shift, *, max_angle: float, max_shift: float):
    """Normalized l_inf magnitude max(|angle|/max_angle, |dy|/max_shift, |dx|/max_shift) `[...]`; a
    parameter with range 0 contributes 0 (it must then be 0 itself)."""
    a = jnp.abs(angle) / max_angle if max_angle > 0 else jnp.zeros_like(angle)
    s = jnp.max(jnp.abs(shift), axis=-1) / max_shift if max_shift > 0 else jnp.zeros_like(angle)
    return jnp.maximum(a, s)


def transformation_grid(*, max_angle: float = 30.0, max_shift: float = 3.0, num_angles: int = 31,
                        num_shifts: int = 7) -> np.ndarray:
    """All (angle, dy, dx) on the grid linspace(-max_angle, max_angle, num_angles) x
    linspace(-max_shift, max_shift, num_shifts)^2: `[num_angles * num_shifts**2, 3]` float32.

    Engstrom et al.'s grid is 31 angles x 5 x 5 shifts; the default 7 shifts per axis hits every integer
    shift in [-3, 3]. A range of 0 gives the single value 0 on that axis.
    """
    _check_range(max_angle, max_shift)
    if num_angles < 1 or num_shifts < 1:
        raise ValueError(f"num_angles and num_shifts must be >= 1, got {num_angles}, {num_shifts}")
    angles = np.linspace(-max_angle, max_angle, num_angles) if max_angle > 0 else np.zeros(1)
    shifts = np.linspace(-max_shift, max_shift, num_shifts) if max_shift > 0 else np.zeros(1)
    a, dy, dx = np.meshgrid(angles, shifts, shifts, indexing="ij")
    return np.stack([a.ravel(), dy.ravel(), dx.ravel()], axis=1).astype(np.float32)


def _check_range(max_angle, max_shift):
    if not (np.isfinite(max_angle) and np.isfinite(max_shift)) or max_angle < 0 or max_shift < 0:
        raise ValueError(f"max_angle and max_shift must be finite and >= 0, got {max_angle}, {max_shift}")
    if max_angle == 0 and max_shift == 0:
        raise ValueError("max_angle and max_shift are both 0: the range is empty")


def margins(logits, labels):
    """f_y - max_{j != y} f_j: logits `[..., K]`, labels broadcastable to `[...]` -> `[...]`."""
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, k, dtype=bool)
    true = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
    return true - other


def _select(mis, mag, marg, criterion):
    """Index of the chosen candidate along axis 0: mis, marg `[n_cand, B]`, mag `[n_cand, B]`."""
    if criterion == "margin":
        return jnp.argmin(marg, axis=0)
    score = jnp.where(mis, mag, jnp.inf)
    best = jnp.min(score, axis=0)
    cand = mis & (mag == best[None])
    any_mis = jnp.any(mis, axis=0)
    pick_mis = jnp.argmin(jnp.where(cand, marg, jnp.inf), axis=0)
    return jnp.where(any_mis, pick_mis, jnp.argmin(marg, axis=0))


# ----------------------------------------------------------------------------- grid search

@functools.partial(jax.jit, static_argnames=("logits_fn", "padding", "chunk", "criterion", "max_angle",
                                             "max_shift", "box"))
def _grid_batch(logits_fn, x, labels, params, valid, *, padding, chunk, criterion, max_angle, max_shift, box):
    """x `[B, H, W, C]`, params `[n_chunks * chunk, 3]` (rows with valid False are padding) ->
    chosen (angle [B], shift [B, 2], margin [B])."""
    b = x.shape[0]

    def one_chunk(p):                                            # p [chunk, 3]
        xt = jax.vmap(lambda q: transform_images(x, jnp.full((b,), q[0]), jnp.broadcast_to(q[1:], (b, 2)),
                                                 padding=padding))(p)
        xt = clip_to_box(xt.reshape((chunk * b,) + x.shape[1:]), Box(*box))
        logits = logits_fn(xt).reshape(chunk, b, -1)
        return margins(logits, labels[None]), jnp.argmax(logits, -1)

    marg, pred = jax.lax.map(one_chunk, params.reshape(-1, chunk, 3))
    marg = jnp.where(valid[:, None], marg.reshape(-1, b), jnp.inf)
    mis = (pred.reshape(-1, b) != labels[None]) & valid[:, None]
    mag = magnitude(params[:, 0], params[:, 1:], max_angle=max_angle, max_shift=max_shift)
    idx = _select(mis, jnp.broadcast_to(mag[:, None], marg.shape), marg, criterion)
    chosen = params[idx]
    return chosen[:, 0], chosen[:, 1:], marg[idx, jnp.arange(b)]


def spatial_grid(logits_fn: Callable, x, labels, *, p=None, key=None, box: Box = Box(0.0, 1.0),
                 max_angle: float = 30.0, max_shift: float = 3.0, num_angles: int = 31, num_shifts: int = 7,
                 grid=None, padding: str = "zeros", criterion: str = "magnitude", batch_size: int = 100,
                 chunk: int = 16) -> SpatialResult:
    """Exhaustive grid search for the worst rotation + translation (Engstrom et al. 2017).

    Evaluates the model on every transformation of `transformation_grid(...)` (or the given `grid`
    `[n, 3]` of (angle, dy, dx) inside the range) for every example, batched: `chunk` transformations of
    a `batch_size` batch of examples per model call, under one jit (the last example batch is padded,
    so all batches share one compilation).

    criterion "magnitude" (default): the misclassifying transformation of smallest normalized magnitude
    (ties: lowest margin), so `distance` is the smallest range scale that fools the model on the grid;
    "margin": the transformation of lowest margin f_y - max_j f_j (the "worst" one in the loss sense).

    x: `[batch, H, W, C]` in the box; labels `[batch]` int. `p` must be None (there is no pixel norm);
    `key` is unused (the search is deterministic), accepted for the common attack call shape.
    Returns a `SpatialResult` (module docstring); model_calls = grid size per example.
    """
    if p is not None:
        raise ValueError(f"spatial attacks have no l_p norm; pass p=None, got p={p}")
    del key
    _check_padding(padding)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    _check_range(max_angle, max_shift)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    _check_images(x)
    if grid is None:
        grid = transformation_grid(max_angle=max_angle, max_shift=max_shift, num_angles=num_angles,
                                   num_shifts=num_shifts)
    grid = np.asarray(grid, np.float32)
    if grid.ndim != 2 or grid.shape[1] != 3 or len(grid) == 0:
        raise ValueError(f"grid must be [n, 3] rows of (angle, dy, dx), got shape {grid.shape}")
    mags = np.asarray(magnitude(jnp.asarray(grid[:, 0]), jnp.asarray(grid[:, 1:]), max_angle=max_angle,
                                max_shift=max_shift))
    if np.any(mags > 1 + 1e-6) or (max_angle == 0 and np.any(grid[:, 0] != 0)) or \
            (max_shift == 0 and np.any(grid[:, 1:] != 0)):
        raise ValueError("grid has transformations outside the range (max_angle, max_shift)")
    n_t = len(grid)
    chunk = max(1, min(chunk, n_t))
    pad = (-n_t) % chunk
    params = np.concatenate([grid, np.zeros((pad, 3), np.float32)])
    valid = np.arange(len(params)) < n_t
    box_t = (float(np.asarray(box.lo)), float(np.asarray(box.hi))) if np.ndim(box.lo) == 0 and np.ndim(box.hi) == 0 \
        else None
    if box_t is None:
        raise ValueError("spatial attacks take a scalar box (lo, hi)")
    run = functools.partial(_grid_batch, logits_fn, params=jnp.asarray(params), valid=jnp.asarray(valid),
                            padding=padding, chunk=chunk, criterion=criterion, max_angle=float(max_angle),
                            max_shift=float(max_shift), box=box_t)
    t0 = time.perf_counter()
    angle, shift, _ = _batched(run, x, labels, batch_size)
    return _finish(logits_fn, x, labels, angle, shift, padding=padding, box=box, max_angle=max_angle,
                   max_shift=max_shift, model_calls=n_t, t0=t0, method="spatial_grid")


def _batched(run, x, labels, batch_size):
    """Runs `run(xb, yb) -> tuple of [B, ...]` over padded batches; returns numpy concatenations."""
    n = x.shape[0]
    bs = max(1, min(batch_size, n))
    outs = []
    for i in range(0, n, bs):
        xb, yb = x[i:i + bs], labels[i:i + bs]
        m = xb.shape[0]
        if m < bs:
            xb = jnp.concatenate([xb, jnp.broadcast_to(xb[:1], (bs - m,) + xb.shape[1:])])
            yb = jnp.concatenate([yb, jnp.broadcast_to(yb[:1], (bs - m,))])
        outs.append([np.asarray(o)[:m] for o in run(xb, yb)])
    return tuple(np.concatenate(parts) for parts in zip(*outs))


def _finish(logits_fn, x, labels, angle, shift, *, padding, box, max_angle, max_shift, model_calls, t0,
            method) -> SpatialResult:
    """Applies the chosen transformations, clips to the box, re-verifies with the model."""
    n = x.shape[0]
    angle = jnp.asarray(angle, jnp.float32)
    shift = jnp.asarray(shift, jnp.float32)
    x_t = np.asarray(_transform_clip(x, angle, shift, padding=padding, box=(float(box.lo), float(box.hi))))
    logits_t = np.asarray(logits_fn(jnp.asarray(x_t)))
    logits_c = np.asarray(logits_fn(x))
    labels_np = np.asarray(labels)
    pred_t, pred_c = logits_t.argmax(-1), logits_c.argmax(-1)
    wrong_clean = pred_c != labels_np
    found = (pred_t != labels_np) & ~wrong_clean
    mag = np.asarray(magnitude(angle, shift, max_angle=max_angle, max_shift=max_shift), np.float64)
    keep = found.reshape((n,) + (1,) * (x.ndim - 1))
    x_adv = np.where(keep, x_t, np.asarray(x))
    angle_np = np.where(wrong_clean, 0.0, np.asarray(angle)).astype(np.float32)
    shift_np = np.where(wrong_clean[:, None], 0.0, np.asarray(shift)).astype(np.float32)
    marg = np.where(wrong_clean, np.asarray(margins(jnp.asarray(logits_c), labels)),
                    np.asarray(margins(jnp.asarray(logits_t), labels)))
    elapsed = time.perf_counter() - t0
    return SpatialResult(
        x_adv=x_adv, distance=np.where(found, mag, np.where(wrong_clean, 0.0, np.inf)),
        success=found | wrong_clean, label_adv=np.where(found, pred_t, pred_c).astype(np.int32),
        model_calls=np.full((n,), model_calls, np.int64), time_s=np.full((n,), elapsed / max(n, 1)),
        p=np.nan, method=method, angle=angle_np, shift=shift_np, margin=marg.astype(np.float32))


# ----------------------------------------------------------------------------- first-order search

class _Best(NamedTuple):
    u: jax.Array        # [B, 3] normalized parameters in [-1, 1]
    mis: jax.Array      # [B] bool
    mag: jax.Array      # [B]
    margin: jax.Array   # [B]


def _better(new_mis, new_mag, new_marg, best: _Best):
    """Elementwise: is the candidate better under the 'magnitude' rule?"""
    smaller = new_mis & (~best.mis | (new_mag < best.mag) | ((new_mag == best.mag) & (new_marg < best.margin)))
    return smaller | (~new_mis & ~best.mis & (new_marg < best.margin))


@functools.partial(jax.jit, static_argnames=("logits_fn", "padding", "num_steps", "restarts", "line_search",
                                             "loss", "max_angle", "max_shift", "box"))
def _first_order_batch(logits_fn, x, labels, key, step_size, *, padding, num_steps, restarts, line_search, loss,
                       max_angle, max_shift, box):
    b = x.shape[0]
    scale = jnp.asarray([max_angle, max_shift, max_shift], jnp.float32)
    active = (scale > 0).astype(jnp.float32)

    def evaluate(u):
        q = u * scale
        xt = clip_to_box(transform_images(x, q[:, 0], q[:, 1:], padding=padding), Box(*box))
        logits = logits_fn(xt)
        marg = margins(logits, labels)
        mis = jnp.argmax(logits, -1) != labels
        obj = marg if loss == "margin" else -(jax.nn.log_softmax(logits)[jnp.arange(b), labels])
        return jnp.sum(obj), (marg, mis)               # obj is minimized; per-example u_i only moves term i

    grad_fn = jax.grad(evaluate, has_aux=True)

    def consider(best, u, marg, mis):
        mag = jnp.max(jnp.abs(u) * active, axis=-1)
        take = _better(mis, mag, marg, best)
        return _Best(jnp.where(take[:, None], u, best.u), jnp.where(take, mis, best.mis),
                     jnp.where(take, mag, best.mag), jnp.where(take, marg, best.margin))

    def restart(best, k):
        u0 = jax.random.uniform(k, (b, 3), minval=-1.0, maxval=1.0) * active

        def step(_, carry):
            u, best = carry
            g, (marg, mis) = grad_fn(u)
            best = consider(best, u, marg, mis)
            u = jnp.clip(u - step_size * jnp.sign(g) * active, -1.0, 1.0)
            return u, best

        u, best = jax.lax.fori_loop(0, num_steps, step, (u0, best))
        _, (marg, mis) = evaluate(u)
        return consider(best, u, marg, mis), None

    init = _Best(jnp.zeros((b, 3)), jnp.zeros((b,), bool), jnp.full((b,), jnp.inf), jnp.full((b,), jnp.inf))
    best, _ = jax.lax.scan(restart, init, jax.random.split(key, restarts))

    if line_search > 0:  # shrink the best misclassifying u towards 0: smallest s*u that still fools
        s = jnp.arange(1, line_search + 1, dtype=jnp.float32) / line_search

        def at_scale(si):
            _, (marg, mis) = evaluate(best.u * si)
            return marg, mis

        marg_s, mis_s = jax.lax.map(at_scale, s)                 # [L, B]
        first = jnp.argmax(mis_s, axis=0)
        use = best.mis & jnp.any(mis_s, axis=0)
        u = jnp.where(use[:, None], best.u * s[first][:, None], best.u)
        marg = jnp.where(use, marg_s[first, jnp.arange(b)], best.margin)
        best = best._replace(u=u, margin=marg)
    q = best.u * scale
    return q[:, 0], q[:, 1:], best.margin


def spatial_first_order(logits_fn: Callable, x, labels, *, p=None, key, box: Box = Box(0.0, 1.0),
                        max_angle: float = 30.0, max_shift: float = 3.0, num_steps: int = 20, restarts: int = 2,
                        step_size: float = 0.15, loss: str = "margin", line_search: int = 16,
                        padding: str = "zeros", batch_size: int = 100) -> SpatialResult:
    """First-order search for the worst rotation + translation: sign-gradient PGD on the normalized
    parameters u = (angle / max_angle, dy / max_shift, dx / max_shift) in [-1, 1]^3 (Engstrom et al.'s
    first-order attack, in the l_inf geometry of the magnitude m), with random starts from `key`.

    Each of `restarts` runs starts uniformly in [-1, 1]^3 and takes `num_steps` steps
    u <- clip(u - step_size * sign(grad loss), -1, 1), loss "margin" (f_y - max_j f_j, minimized) or "ce"
    (cross-entropy, maximized). Every iterate is a candidate; the best is chosen as in the grid attack
    ("magnitude" rule). A found transformation u* is then shrunk: the smallest s in {1/L, ..., 1}
    (L = `line_search`) with s u* still misclassified, so `distance` approximates the smallest fooling
    range scale along that direction.

    x: `[batch, H, W, C]` in the box; labels `[batch]`; `p` must be None. model_calls per example:
    restarts * (2 num_steps + 1) + line_search (forward and backward passes).
    """
    if p is not None:
        raise ValueError(f"spatial attacks have no l_p norm; pass p=None, got p={p}")
    _check_padding(padding)
    _check_range(max_angle, max_shift)
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
    if num_steps < 0 or restarts < 1 or line_search < 0 or not step_size > 0:
        raise ValueError(f"need num_steps >= 0, restarts >= 1, line_search >= 0, step_size > 0; got "
                         f"{num_steps}, {restarts}, {line_search}, {step_size}")
    if key is None:
        raise ValueError("spatial_first_order needs a jax.random key for its random starts")
    if np.ndim(box.lo) != 0 or np.ndim(box.hi) != 0:
        raise ValueError("spatial attacks take a scalar box (lo, hi)")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    _check_images(x)
    box_t = (float(box.lo), float(box.hi))
    n = x.shape[0]
    bs = max(1, min(batch_size, n))
    keys = iter(jax.random.split(key, -(-n // bs)))
    run = lambda xb, yb: _first_order_batch(  # noqa: E731
        logits_fn, xb, yb, next(keys), jnp.float32(step_size), padding=padding, num_steps=num_steps,
        restarts=restarts, line_search=line_search, loss=loss, max_angle=float(max_angle),
        max_shift=float(max_shift), box=box_t)
    t0 = time.perf_counter()
    angle, shift, _ = _batched(run, x, labels, batch_size)
    return _finish(logits_fn, x, labels, angle, shift, padding=padding, box=box, max_angle=max_angle,
                   max_shift=max_shift, model_calls=restarts * (2 * num_steps + 1) + line_search, t0=t0,
                   method="spatial_first_order")
