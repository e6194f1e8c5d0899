"""Layer widths n_k from a model's own definition, and the wide-layer check of Nguyen & Hein.

`layer_widths(model, input_shape)` traces the model with `jax.eval_shape` (no real forward pass, no
parameters allocated) and lists every layer's units n_k = H_k * W_k * C_k (spatial positions times
channels for a conv layer, units for a dense layer), in call order.

Which outputs count as layers: the outputs of `robustjax.models.zoo.Act` modules (each activated
layer of the zoo and skip networks). A model without `Act` modules (e.g. `models.MLP`, `LeNet`) is
read through its `nn.Conv` / `nn.Dense` outputs instead (pre-activation, same width). The model's
output (logits) is always the last layer, L.

`wide_layer_check(model, input_shape, N, ...)` then states, with a reason for each failure, the
assumptions of
  - Nguyen & Hein, ICML 2017 (fully connected nets) and ICML 2018 (CNNs): a layer k with n_k >= N,
    the net pyramidal from k on (n_k >= n_{k+1} >= ... >= n_L), layer k+1 fully connected, sigma
    analytic and strictly increasing and bounded or of at most exponential-left / linear-right
    growth, l in C^2 with l'(a) = 0 only at global minima, no identical training points, and for
    CNNs no identical input patches in different images (methods.md section 3; the talk's
    "General assumptions" slide).
Under them every critical point in S_k (F_k and W_{k+2}, ..., W_L of full rank) is a global minimum
with zero training error. For networks with branches (Inception) the layers are taken in call order.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.landscape.capture import captured_outputs, is_activated_layer, is_linear_layer
from robustjax.models import activations

IMAGENET_N = 1_281_167  # ILSVRC-2012 training images (the talk's "N ~ 1.2 million")


class Layer(NamedTuple):
    """One layer: k (1-based, call order), name, shape without batch `(H, W, C)` or `(n,)`, units n_k,
    kind "conv" (spatial), "dense" or "output"."""
    k: int
    name: str
    shape: tuple
    units: int
    kind: str


def _check_input_shape(input_shape) -> tuple:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be [batch, ...] with positive sizes, got {input_shape}")
    return (1,) + shape[1:]


def layer_widths(model: nn.Module, input_shape: Sequence[int], **apply_kwargs) -> list[Layer]:
    """Every layer's width n_k, from shape inference only.

    Args:
      model: a Flax linen module `model.apply(variables, x) -> logits`.
      input_shape: `[batch, ...]` of one input batch (the batch size is ignored; n_k is per example).
      apply_kwargs: passed to `model.apply` (e.g. `train=False`).

    Returns:
      `[Layer]` in call order; the last one is the output layer (kind "output").

    Raises:
      ValueError: bad input_shape, or a model in which no layer can be seen.

    Guarantee: nothing is computed or allocated beyond shapes (`jax.eval_shape` of `model.init`
    and of `model.apply(..., capture_intermediates=...)`).
    """
    shape = _check_input_shape(input_shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    result = None
    for flt in (is_activated_layer, is_linear_layer):
        names: list[str] = []

        def run(v, xx, flt=flt, names=names):
            out, state = model.apply(v, xx, capture_intermediates=lambda m, _: flt(m),
                                     mutable=["intermediates"], **apply_kwargs)
            flat = captured_outputs(state.get("intermediates", {}))
            keep = [(n, a) for n, a in flat if a is not out]  # the output layer is added below
            names.extend(n for n, _ in keep)
            return [a for _, a in keep], out

        hidden, out = jax.eval_shape(run, variables, x)
        if hidden or flt is is_linear_layer:
            result = (names, hidden, out)
            break
    names, hidden, out = result
    layers = [Layer(i + 1, n, tuple(a.shape[1:]), int(np.prod(a.shape[1:])),
                    "conv" if len(a.shape) >= 4 else "dense") for i, (n, a) in enumerate(zip(names, hidden))]
    layers.append(Layer(len(layers) + 1, "output", tuple(out.shape[1:]), int(np.prod(out.shape[1:])), "output"))
    if len(layers) == 1:
        raise ValueError(f"{type(model).__name__}: no hidden layer found (use zoo.Act, nn.Conv or nn.Dense)")
    return layers


def widest(layers: Sequence[Layer]) -> Layer:
    """The hidden layer with the largest n_k (the first one on ties), i.e. M = max_k n_k and its k."""
    hidden = [lay for lay in layers if lay.kind != "output"]
    if not hidden:
        raise ValueError("no hidden layers")
    return max(hidden, key=lambda lay: (lay.units, -lay.k))


# ----------------------------------------------------------------------------- assumption checks

class Check(NamedTuple):
    """One assumption: what, ok (True / False / None = not checked), and why."""
    what: str
    ok: bool | None
    reason: str


class WideLayerCandidate(NamedTuple):
    """A layer with n_k >= N: is the net pyramidal from it, and is layer k+1 fully connected."""
    layer: Layer
    pyramidal: bool
    pyramidal_reason: str
    next_fully_connected: bool
    next_reason: str


class WideLayerReport(NamedTuple):
    """The wide-layer check for N training points.

    layers: all layers; widest: the layer with M = max_k n_k; wide: candidates with n_k >= N;
    checks: every assumption with its reason; applies: all checks passed (None-checks, e.g. data not
    given, count as not verified, so applies is False then too); lemma_applies: the rank lemma's part
    (some wide layer with the net pyramidal from it, analytic strictly increasing sigma, distinct
    inputs) holds, so F_k has full rank N for almost all parameters.
    """
    N: int
    layers: list
    widest: Layer
    wide: list
    checks: list
    applies: bool
    lemma_applies: bool

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def summary(self) -> str:
        lines = [f"N = {self.N:,}; M = max_k n_k = {self.widest.units:,} at k = {self.widest.k} "
                 f"({self.widest.name}); wide layers: {[c.layer.k for c in self.wide] or 'none'}"]
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "n/a "}[c.ok]
            lines.append(f"  [{mark}] {c.what}: {c.reason}")
        lines.append(f"  theorem applies: {self.applies}; rank lemma applies: {self.lemma_applies}")
        return "\n".join(lines)


def pyramidal_from(layers: Sequence[Layer], k: int) -> tuple[bool, str]:
    """Is n_k >= n_{k+1} >= ... >= n_L? Returns (ok, reason naming the first increase)."""
    seq = [lay for lay in layers if lay.k >= k]
    for a, b in zip(seq, seq[1:]):
        if b.units > a.units:
            return False, (f"n_{b.k} = {b.units:,} ({b.name}) > n_{a.k} = {a.units:,} ({a.name})")
    return True, f"n_{k} >= ... >= n_L = {seq[-1].units:,} over {len(seq)} layers"


def activation_checks(act: activations.Activation | str | None, alpha: float = 1.0) -> list[Check]:
    """sigma analytic, strictly increasing, and bounded or with |s(t)| <= r1 e^{r2 t} (t < 0) and
    |s(t)| <= r3 t + r4 (t >= 0). The growth condition is read numerically on [-1e4, 1e4] in float64."""
    if act is None:
        return [Check("activation", False, "the model has no `act` field and none was given")]
    if isinstance(act, str):
        act = activations.get(act, alpha=alpha)
    out = [Check("sigma analytic", bool(act.analytic),
                 f"{act.name} is real-analytic on R" if act.analytic
                 else f"{act.name} is not analytic (not differentiable at 0)"),
           Check("sigma strictly increasing", bool(act.strictly_increasing),
                 f"{act.name}' > 0 everywhere" if act.strictly_increasing
                 else f"{act.name} is constant on an interval (sigma' = 0 for t < 0)")]
    with jax.enable_x64(True):
        f = lambda t: np.abs(np.asarray(act.fn(jnp.asarray(t, jnp.float64))))  # noqa: E731
        near = f(np.linspace(-20.0, 20.0, 401)).max()
        far = f(np.linspace(-1e4, 1e4, 20001)).max()
        left = f(np.array([-10.0, -60.0]))
        right = f(np.array([1e2, 1e4]))
    bounded = bool(np.isfinite(far) and far <= 1.01 * near + 1e-9)
    left_decays = bool(left[1] <= 1e-6 * left[0] + 1e-300)   # exp decay: ratio <= e^{-50 r2}
    right_linear = bool(right[1] / 1e4 <= 2.0 * right[0] / 1e2 + 1e-12)
    ok = bounded or (left_decays and right_linear)
    reason = ("bounded" if bounded else
              "decays exponentially as t -> -inf and grows at most linearly" if ok else
              f"neither bounded nor exponentially decaying at -inf with linear growth at +inf "
              f"(|sigma(-10)| = {left[0]:.3g}, |sigma(-60)| = {left[1]:.3g}, |sigma(1e4)| = {right[1]:.3g})")
    out.append(Check("sigma growth condition", ok, reason))
    return out


_LOSS_OK = {"squared": (True, "l(a) = a^2 is C^2 and l'(a) = 0 only at its minimum"),
            "pseudo_huber": (True, "C^inf, l'(a) = 0 only at a = 0"),
            "huber": (False, "optax's Huber loss is C^1 but not C^2 (kink in l'' at |a| = delta)"),
            "cross_entropy": (False, "cross-entropy has no global minimum (l'(a) -> 0 only as a -> inf); "
                                     "the ICML 2017/18 theorems need l in C^2 with l'(a) = 0 at a global minimum")}


def loss_check(loss: str | None) -> Check:
    if loss is None:
        return Check("loss", None, "no loss given")
    if loss not in _LOSS_OK:
        return Check("loss", None, f"unknown loss {loss!r}: not checked")
    ok, why = _LOSS_OK[loss]
    return Check("loss", ok, why)


def distinct_inputs(x: np.ndarray) -> Check:
    """No two training points identical (exact comparison of their bytes). x: `[N, ...]`."""
    rows = _rows(np.asarray(x).reshape(len(x), -1))
    _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    dup = int(np.sum(counts[counts > 1]))
    if dup:
        i = np.flatnonzero(counts[inverse.ravel()] > 1)[:2]
        return Check("distinct training points", False, f"{dup} points are not distinct (e.g. indices {i.tolist()})")
    return Check("distinct training points", True, f"all {len(x)} points differ")


def _rows(a: np.ndarray) -> np.ndarray:
    """Rows of a 2-D array as one opaque item each (exact byte comparison); uint8 when the data are
    k/255 (images), which makes the comparison 4x cheaper and is still exact."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        q = np.rint(a * 255.0)
        if np.all(np.abs(q - a * 255.0) < 1e-3) and q.min() >= 0 and q.max() <= 255:
            a = np.ascontiguousarray(q.astype(np.uint8))
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def patches(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int] = (1, 1),
            padding: str = "SAME") -> np.ndarray:
    """All conv input patches of images x `[N, H, W, C]` -> `[N, P, kh*kw*C]` (zero padding for SAME)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
    kh, kw = kernel
    if padding == "SAME":
        ph, pw = kh - 1, kw - 1
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    elif padding != "VALID":
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::strides[0], ::strides[1]]
    n, hh, ww, c = win.shape[:4]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n, hh * ww, kh * kw * c)


def distinct_patches(x: np.ndarray, kernel: Sequence[int] = (3, 3), strides: Sequence[int] = (1, 1),
                     padding: str = "SAME") -> Check:
    """ICML 2018 assumption: the first conv's input patches of different images differ
    (x_i^p != x_j^q for all patches p, q and i != j). Exact; memory ~ N * P * kh*kw*C bytes."""
    p = patches(x, kernel, strides, padding)
    n, P, D = p.shape
    rows = _rows(p.reshape(n * P, D))
    _, inv = np.unique(rows, return_inverse=True)
    img = np.repeat(np.arange(n), P)
    pairs = np.unique(np.stack([inv.ravel(), img], 1), axis=0)
    shared = np.bincount(pairs[:, 0]) > 1
    what = f"distinct {kernel[0]}x{kernel[1]} patches across images"
    if shared.any():
        ids = np.flatnonzero(shared)
        example = p.reshape(n * P, D)[np.flatnonzero(inv.ravel() == ids[0])[0]]
        desc = "all zero" if not np.any(example) else ("constant" if np.ptp(example) == 0 else "non-constant")
        return Check(what, False, f"{len(ids)} distinct patches occur in two or more of the {n} images "
                                  f"(e.g. a {desc} patch, value range [{example.min():.3g}, {example.max():.3g}])")
    return Check(what, True, f"no patch of one image occurs in another ({n} images x {P} patches)")


def wide_layer_check(model: nn.Module, input_shape: Sequence[int], N: int, *, act=None,
                     loss: str | None = "squared", x: np.ndarray | None = None,
                     patch: dict | None = None, layers: Sequence[Layer] | None = None) -> WideLayerReport:
    """Which layers have n_k >= N and whether the wide-layer theorem's assumptions hold.

    Args:
      model, input_shape: as in `layer_widths` (or pass `layers` already computed).
      N: number of training points (ImageNet: `IMAGENET_N`).
      act: activation name or `Activation`; default the model's `act` field (and `alpha`).
      loss: loss name (robustjax.losses) for the loss assumption; None skips it.
      x: the training inputs `[N, ...]`, to check distinct points (and patches for images); if None
        the data assumptions are reported as not checked.
      patch: the first conv's {"kernel": (kh, kw), "strides": (sh, sw), "padding": "SAME"}; None
        skips the patch check (fully connected nets need none).

    Returns:
      WideLayerReport; `report.failures()` lists each failed assumption with its reason.
    """
    N = validate.positive_int(N, "N")
    layers = list(layers) if layers is not None else layer_widths(model, input_shape)
    if x is not None and len(x) != N:
        raise ValueError(f"x has {len(x)} points but N = {N}")
    wide = []
    for lay in layers:
        if lay.kind == "output" or lay.units < N:
            continue
        pyr, why = pyramidal_from(layers, lay.k)
        nxt = layers[lay.k]  # layer k+1 (k is 1-based)
        fc = nxt.kind in ("dense", "output")
        wide.append(WideLayerCandidate(lay, pyr, why, fc, f"layer {nxt.k} ({nxt.name}) is "
                                       + ("fully connected" if fc else f"a conv layer of shape {nxt.shape}")))
    top = widest(layers)
    checks = []
    if wide:
        checks.append(Check("wide layer n_k >= N", True,
                            f"{len(wide)} layer(s), first k = {wide[0].layer.k} ({wide[0].layer.name}, "
                            f"n_k = {wide[0].layer.units:,})"))
    else:
        checks.append(Check("wide layer n_k >= N", False,
                            f"max_k n_k = {top.units:,} at k = {top.k} ({top.name}) < N = {N:,}"))
    best = next((c for c in wide if c.pyramidal and c.next_fully_connected), None) \
        or next((c for c in wide if c.pyramidal), None) or (wide[0] if wide else None)
    if best is not None:
        checks.append(Check(f"pyramidal from k = {best.layer.k}", best.pyramidal, best.pyramidal_reason))
        checks.append(Check(f"layer k+1 = {best.layer.k + 1} fully connected", best.next_fully_connected,
                            best.next_reason))
    a = act if act is not None else getattr(model, "act", None)
    checks += activation_checks(a, getattr(model, "alpha", 1.0))
    checks.append(loss_check(loss))
    if x is None:
        checks.append(Check("distinct training points", None, "no data given"))
    else:
        checks.append(distinct_inputs(x))
        if patch is not None:
            checks.append(distinct_patches(x, **patch))
    act_ok = all(c.ok for c in checks if c.what.startswith("sigma analytic") or c.what.startswith("sigma strictly"))
    data_ok = all(c.ok is not False for c in checks if c.what.startswith("distinct"))
    lemma = bool(best is not None and best.pyramidal and act_ok and data_ok)
    applies = all(c.ok is True for c in checks)
    return WideLayerReport(N, layers, top, wide, checks, applies, lemma)
