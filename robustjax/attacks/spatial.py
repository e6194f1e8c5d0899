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

Results are `AttackResult`s with p = None (the distance is the magnitude m, not an l_p norm of
x_adv - x, so `best_of` compares spatial results only with each other) and info = {"angle" `[batch]`
degrees, "shift" `[batch, 2]` pixels (dy down, dx right), "margin" `[batch]` f_y - max_{j != y} f_j at
that transformation}: the misclassifying transformation of smallest magnitude where success, otherwise
the one of lowest margin found (the worst case is known even where the model survives; x_adv is then x);
0 and 0 for inputs the model already misclassifies.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import losses, validate
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import AttackResult, as_box, check_inputs, finalize
from robustjax.batching import map_batches
from robustjax.geometry import Box, margin

PADDINGS = ("zeros", "edge")
CRITERIA = ("magnitude", "margin")


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


@functools.partial(jax.jit, static_argnames=("padding",))
def _transform_clip(x, angle, shift, lo, hi, *, padding):
    return Box(lo, hi).clip(transform_images(x, angle, shift, padding=padding))


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
    shift in [-3, 3]. A range of 0 gives the single value 0 on that axis; a range > 0 needs at least 2 values
    (a single one would be the range's lower end only).
    """
    max_angle, max_shift = _check_range(max_angle, max_shift)
    for name, num, rng, none in (("num_angles", num_angles, max_angle, "max_angle=0 for no rotation"),
                                 ("num_shifts", num_shifts, max_shift, "max_shift=0 for no translation")):
        validate.positive_int(num, name)
        if num < 2 and rng > 0:
            raise ValueError(f"{name} must be >= 2 for a range of +-{rng:g} (1 value would be -{rng:g} only); "
                             f"got {num}. Set {none}.")
    angles = np.linspace(-max_angle, max_angle, num_angles) if max_angle > 0 else np.zeros(1)
    shifts = np.linspace(-max_shift, max_shift, num_shifts) if max_shift > 0 else np.zeros(1)
    a, dy, dx = np.meshgrid(angles, shifts, shifts, indexing="ij")
    return np.stack([a.ravel(), dy.ravel(), dx.ravel()], axis=1).astype(np.float32)


def _check_range(max_angle, max_shift) -> tuple[float, float]:
    """(max_angle, max_shift) as floats: finite, >= 0, not both 0."""
    max_angle = validate.positive_float(max_angle, "max_angle", allow_zero=True)
    max_shift = validate.positive_float(max_shift, "max_shift", allow_zero=True)
    if max_angle == 0 and max_shift == 0:
        raise ValueError("max_angle and max_shift are both 0: the range is empty")
    return max_angle, max_shift


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

@jit_model(("padding", "chunk", "criterion", "max_angle", "max_shift"))
def _grid_batch(logits_fn, x, labels, lo, hi, params, valid, *, padding, chunk, criterion, max_angle, max_shift):
    """x, lo, hi `[B, H, W, C]`, params `[n_chunks * chunk, 3]` (rows with valid False are padding) ->
    chosen (angle [B], shift [B, 2])."""
    b = x.shape[0]

    def one_chunk(p):                                            # p [chunk, 3]
        xt = jax.vmap(lambda q: Box(lo, hi).clip(transform_images(x, jnp.full((b,), q[0]),
                                                                  jnp.broadcast_to(q[1:], (b, 2)), padding=padding)))(p)
        logits = logits_fn(xt.reshape((chunk * b,) + x.shape[1:]))
        marg = margin(logits, jnp.tile(labels, chunk)).reshape(chunk, b)
        return marg, jnp.argmax(logits, -1).reshape(chunk, b)

    marg, pred = jax.lax.map(one_chunk, params.reshape(-1, chunk, 3))
    marg = jnp.where(valid[:, None], marg.reshape(-1, b), jnp.inf)
    mis = (pred.reshape(-1, b) != labels[None]) & valid[:, None]
    mag = magnitude(params[:, 0], params[:, 1:], max_angle=max_angle, max_shift=max_shift)
    idx = _select(mis, jnp.broadcast_to(mag[:, None], marg.shape), marg, criterion)
    chosen = params[idx]
    return chosen[:, 0], chosen[:, 1:]


def spatial_grid(logits_fn: Callable, x, labels, *, p=None, key=None, box=None, max_angle: float = 30.0,
                 max_shift: float = 3.0, num_angles: int = 31, num_shifts: int = 7, grid=None,
                 padding: str = "zeros", criterion: str = "magnitude", batch_size: int = 100, chunk: int = 16,
                 min_margin: float | None = None) -> AttackResult:
    """Exhaustive grid search for the worst rotation + translation (Engstrom et al. 2017), a minimal attack
    in the magnitude m (module docstring).

    Evaluates the model on every transformation of `transformation_grid(...)` (or the given `grid`
    `[n, 3]` of (angle, dy, dx) inside the range) for every example, batched: `chunk` transformations of
    a `batch_size` batch of examples per model call, under one jit (the last example batch is padded,
    so all batches share one compilation).

    criterion "magnitude" (default): the misclassifying transformation of smallest normalized magnitude
    (ties: lowest margin), so `distance` is the smallest range scale that fools the model on the grid;
    "margin": the transformation of lowest margin f_y - max_j f_j (the "worst" one in the loss sense).

    x: `[batch, H, W, C]` in the box; labels `[batch]` int. `p` must be None (there is no pixel norm);
    `key` is unused (the search is deterministic), accepted for the common attack call shape. box: Box,
    (lo, hi) or None ([0, 1]), lo, hi a scalar, one image's shape or `[batch, H, W, C]`; transformed
    images are clipped to it. min_margin: see `finalize`.
    Returns an AttackResult (module docstring: p None, info angle/shift/margin); model_calls = grid size.
    """
    if p is not None:
        raise ValueError(f"spatial attacks have no l_p norm; pass p=None, got p={p}")
    del key
    _check_padding(padding)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    max_angle, max_shift = _check_range(max_angle, max_shift)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    _check_images(x)
    box = as_box(box, x)
    if grid is None:
        grid = transformation_grid(max_angle=max_angle, max_shift=max_shift, num_angles=num_angles,
                                   num_shifts=num_shifts)
    grid = np.asarray(grid, np.float32)
    if grid.ndim != 2 or grid.shape[1] != 3 or len(grid) == 0:
        raise ValueError(f"grid must be [n, 3] rows of (angle, dy, dx), got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"grid contains NaN or inf ({int(np.sum(~np.isfinite(grid)))} entries)")
    mags = np.asarray(magnitude(jnp.asarray(grid[:, 0]), jnp.asarray(grid[:, 1:]), max_angle=max_angle,
                                max_shift=max_shift))
    if np.any(mags > 1 + 1e-6) or (max_angle == 0 and np.any(grid[:, 0] != 0)) or \
            (max_shift == 0 and np.any(grid[:, 1:] != 0)):
        raise ValueError("grid has transformations outside the range (max_angle, max_shift)")
    n_t = len(grid)
    chunk = max(1, min(validate.positive_int(chunk, "chunk"), n_t))
    pad = (-n_t) % chunk
    params = np.concatenate([grid, np.zeros((pad, 3), np.float32)])
    valid = np.arange(len(params)) < n_t
    run = functools.partial(_grid_batch, logits_fn, params=jnp.asarray(params), valid=jnp.asarray(valid),
                            padding=padding, chunk=chunk, criterion=criterion, max_angle=float(max_angle),
                            max_shift=float(max_shift))
    t0 = time.perf_counter()
    angle, shift = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size)
    return _finish(logits_fn, x, labels, angle, shift, padding=padding, box=box, max_angle=max_angle,
                   max_shift=max_shift, model_calls=n_t, t0=t0, method="spatial_grid",
                   batch_size=batch_size, min_margin=min_margin)


def _finish(logits_fn, x, labels, angle, shift, *, padding, box, max_angle, max_shift, model_calls, t0,
            method, batch_size, min_margin) -> AttackResult:
    """Applies the chosen transformations, clips to the box, re-verifies with the model (`finalize`)."""
    angle = jnp.asarray(angle, jnp.float32)
    shift = jnp.asarray(shift, jnp.float32)
    x_t = map_batches(lambda xb, ab, sb, lob, hib: _transform_clip(xb, ab, sb, lob, hib, padding=padding),
                      (x, angle, shift, box.lo, box.hi), batch_size=batch_size)
    marg = map_batches(lambda zb, yb: margin(logits_fn(zb), yb), (x_t, labels), batch_size=batch_size)
    mag = np.asarray(magnitude(angle, shift, max_angle=max_angle, max_shift=max_shift), np.float64)
    res = finalize(logits_fn, x, labels, x_t, p=None, box=box, model_calls=model_calls, method=method,
                   batch_size=batch_size, min_margin=min_margin, distance=mag, push_outward=False)
    clean = res.misclassified
    clean_marg = map_batches(lambda zb, yb: margin(logits_fn(zb), yb), (x, labels), batch_size=batch_size)
    info = dict(angle=np.where(clean, 0.0, np.asarray(angle)).astype(np.float32),
                shift=np.where(clean[:, None], 0.0, np.asarray(shift)).astype(np.float32),
                margin=np.where(clean, clean_marg, marg).astype(np.float32))
    n = x.shape[0]
    return res._replace(time_s=np.full((n,), (time.perf_counter() - t0) / max(n, 1)), info=info)


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


@jit_model(("padding", "num_steps", "restarts", "line_search", "loss", "max_angle", "max_shift"))
def _first_order_batch(logits_fn, x, labels, lo, hi, key, *, step_size, padding, num_steps, restarts, line_search,
                       loss, max_angle, max_shift):
    b = x.shape[0]
    scale = jnp.asarray([max_angle, max_shift, max_shift], jnp.float32)
    active = (scale > 0).astype(jnp.float32)
    loss_fn = losses.get(loss)

    def evaluate(u):
        q = u * scale
        logits = logits_fn(Box(lo, hi).clip(transform_images(x, q[:, 0], q[:, 1:], padding=padding)))
        obj = loss_fn(logits=logits, labels=labels)         # maximized; u_i only moves term i
        return jnp.sum(obj), (margin(logits, labels), jnp.argmax(logits, -1) != labels)

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
            u = jnp.clip(u + step_size * jnp.sign(g) * active, -1.0, 1.0)
            return u, best

        u, best = jax.lax.fori_loop(0, num_steps, step, (u0, best))
        _, (marg, mis) = evaluate(u)
        return consider(best, u, marg, mis), None

    init = _Best(jnp.zeros((b, 3)), jnp.zeros((b,), bool), jnp.full((b,), jnp.inf), jnp.full((b,), jnp.inf))
    best, _ = jax.lax.scan(restart, init, jax.random.split(key, restarts))

    if line_search > 0:  # shrink the best misclassifying u towards 0: smallest s*u that still fools
        s = jnp.arange(1, line_search + 1, dtype=jnp.float32) / line_search
        mis_s = jax.lax.map(lambda si: evaluate(best.u * si)[1][1], s)                 # [L, B]
        first = jnp.argmax(mis_s, axis=0)
        use = best.mis & jnp.any(mis_s, axis=0)
        best = best._replace(u=jnp.where(use[:, None], best.u * s[first][:, None], best.u))
    q = best.u * scale
    return q[:, 0], q[:, 1:]


def spatial_first_order(logits_fn: Callable, x, labels, *, p=None, key, box=None, max_angle: float = 30.0,
                        max_shift: float = 3.0, num_steps: int = 20, restarts: int = 2, step_size: float = 0.15,
                        loss="margin", line_search: int = 16, padding: str = "zeros", batch_size: int = 100,
                        min_margin: float | None = None) -> AttackResult:
    """First-order search for the worst rotation + translation, a minimal attack in the magnitude m:
    sign-gradient ascent on the normalized parameters u = (angle / max_angle, dy / max_shift, dx / max_shift)
    in [-1, 1]^3 (Engstrom et al.'s first-order attack, in the l_inf geometry of m), with random starts.

    Each of `restarts` runs starts uniformly in [-1, 1]^3 and takes `num_steps` steps
    u <- clip(u + step_size * sign(grad loss), -1, 1), loss a `robustjax.losses` name ("margin":
    max_{j != y} f_j - f_y, or "cross_entropy"), maximized. Every iterate is a candidate; the best is chosen
    as in the grid attack ("magnitude" rule). A found transformation u* is then shrunk: the smallest s in
    {1/L, ..., 1} (L = `line_search`) with s u* still misclassified, so `distance` approximates the smallest
    fooling range scale along that direction.

    x: `[batch, H, W, C]` in the box; labels `[batch]`; `p` must be None; key: the random starts (batch b
    uses fold_in(key, b)); box as in `spatial_grid`. model_calls per example: restarts * (2 num_steps + 1)
    + line_search (forward and backward passes). Returns an AttackResult as `spatial_grid`'s.
    """
    if p is not None:
        raise ValueError(f"spatial attacks have no l_p norm; pass p=None, got p={p}")
    _check_padding(padding)
    max_angle, max_shift = _check_range(max_angle, max_shift)
    losses.get(loss)
    num_steps = validate.positive_int(num_steps, "num_steps", allow_zero=True)
    restarts = validate.positive_int(restarts, "restarts")
    line_search = validate.positive_int(line_search, "line_search", allow_zero=True)
    step_size = validate.positive_float(step_size, "step_size")
    key = validate.key(key)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    _check_images(x)
    box = as_box(box, x)
    run = functools.partial(_first_order_batch, logits_fn, step_size=step_size, padding=padding,
                            num_steps=num_steps, restarts=restarts, line_search=line_search, loss=loss,
                            max_angle=float(max_angle), max_shift=float(max_shift))
    t0 = time.perf_counter()
    angle, shift = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size, key=key)
    return _finish(logits_fn, x, labels, angle, shift, padding=padding, box=box, max_angle=max_angle,
                   max_shift=max_shift, model_calls=restarts * (2 * num_steps + 1) + line_search, t0=t0,
                   method="spatial_first_order", batch_size=batch_size, min_margin=min_margin)
