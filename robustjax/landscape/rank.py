"""Feature-map rank: F_k `[N, n_k]`, the outputs of layer k on the N training points, and its
numerical rank; the lemma of Nguyen & Hein (ICML 2017/2018): if n_k >= N (and sigma analytic,
strictly increasing, inputs/patches distinct), then for almost all parameters F_k has rank N.

Tolerance (stated in every result): singular values of F_k are computed in float64 from the
features; rank = #{sigma_i > tol} with tol = 10 * eps * ||F_k||_F, eps the machine epsilon of the dtype
the features were computed in (float32: 1.19e-7). Why: rounding F_k to that dtype is an entrywise
relative perturbation of size <= eps, whose spectral norm is <= eps * ||F_k||_F; the factor 10 covers
the rounding accumulated in the layers that computed F_k. A singular value above tol cannot be
created by float32 rounding alone. numpy.linalg.matrix_rank's rule (sigma_max * max(N, n) * eps) is far
stricter for wide layers: at n_k = 8192 it calls singular values below sigma_max / 1000 zero, which
random softplus features (a large constant mode, condition number ~1e3) fall under although they
are well above rounding level; pass `tol=` to use another threshold.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.batching import map_batches
from robustjax.landscape.capture import captured_outputs, is_activated_layer, is_linear_layer
from robustjax.landscape.widths import layer_widths
from robustjax.models import activations


class RankResult(NamedTuple):
    """rank of F `[N, n]`; tol and the rule that gave it; full = (rank == min(N, n));
    sigma_max, sigma_min: largest and smallest singular value; cond = sigma_max / sigma_min."""
    rank: int
    N: int
    n: int
    tol: float
    rule: str
    full: bool
    sigma_max: float
    sigma_min: float

    @property
    def cond(self) -> float:
        return self.sigma_max / self.sigma_min if self.sigma_min > 0 else float("inf")


def numerical_rank(F, *, tol: float | None = None, eps: float | None = None) -> RankResult:
    """Numerical rank of F `[N, n]` (float64 SVD).

    tol: absolute threshold; default 10 * eps * ||F||_F (the module docstring says why) with
    eps = finfo(F.dtype).eps (float32 features: 1.19e-7) or the given `eps`.
    """
    F = np.asarray(F)
    if F.ndim != 2 or min(F.shape) == 0:
        raise ValueError(f"F must be a non-empty [N, n] matrix, got shape {F.shape}")
    if not np.all(np.isfinite(F)):
        raise ValueError("F contains NaN or inf")
    N, n = F.shape
    if tol is not None:
        tol = validate.positive_float(tol, "tol", allow_zero=True)
    if eps is not None:
        eps = validate.positive_float(eps, "eps")
    eps = float(np.finfo(F.dtype if np.issubdtype(F.dtype, np.floating) else np.float64).eps) if eps is None else eps
    F64 = F.astype(np.float64)
    # the smaller Gram side would square the condition number; the SVD of the N x n matrix does not
    s = np.linalg.svd(F64, compute_uv=False)
    smax = float(s[0]) if s.size else 0.0
    if tol is None:
        tol = 10.0 * eps * float(np.sqrt(np.sum(s ** 2)))
        rule = f"10 * eps * ||F||_F, eps = {eps:.3g}"
    else:
        rule = "given"
    rank = int(np.sum(s > tol))
    return RankResult(rank, N, n, float(tol), rule, rank == min(N, n), smax, float(s[-1]))


def _layer_name(model: nn.Module, input_shape, layer: str | int) -> str:
    layers = layer_widths(model, input_shape)
    if isinstance(layer, int):
        hidden = [lay for lay in layers if lay.kind != "output"]
        if not 1 <= layer <= len(hidden):
            raise ValueError(f"layer index {layer} out of range [1, {len(hidden)}]")
        return hidden[layer - 1].name
    names = [lay.name for lay in layers if lay.kind != "output"]
    if layer not in names:
        raise ValueError(f"no layer named {layer!r}; layers: {names[:20]}{' ...' if len(names) > 20 else ''}")
    return layer


def feature_matrix(model: nn.Module, variables, x, layer: str | int, *, batch_size: int = 256) -> np.ndarray:
    """F_k `[N, n_k]`: layer k's activated outputs (flattened, NHWC order) on x `[N, ...]`.

    layer: a name from `layer_widths` or its 1-based index k among the hidden layers. For a model
    without `zoo.Act` modules the layer is a Conv/Dense output and the model's `act` is applied to it.
    """
    x = validate.batch(x)
    name = _layer_name(model, (1,) + tuple(x.shape[1:]), layer)

    kinds = []

    def pick(mdl, _):
        hit = "/".join(mdl.path) == name and (is_activated_layer(mdl) or is_linear_layer(mdl))
        if hit:
            kinds.append(is_activated_layer(mdl))
        return hit

    @jax.jit
    def run(xb):
        _, state = model.apply(variables, xb, capture_intermediates=pick, mutable=["intermediates"])
        (_, a), = captured_outputs(state["intermediates"])
        if not kinds[-1]:   # a Conv/Dense output (model without Act modules): apply the model's sigma
            if not hasattr(model, "act"):
                raise ValueError(f"{type(model).__name__} has no `act` field: cannot form the activated features")
            a = activations.get(model.act, alpha=getattr(model, "alpha", 1.0)).fn(a)
        return a.reshape((a.shape[0], -1))

    return map_batches(run, [x], batch_size=batch_size)


class LemmaCheck(NamedTuple):
    """The rank lemma on one random draw: layer, n_k, N, the rank result, holds = (rank == N)."""
    layer: str
    n_k: int
    N: int
    rank: RankResult
    holds: bool


def check_rank_lemma(model: nn.Module, x, layer: str | int, key, *, tol: float | None = None,
                     batch_size: int = 256) -> LemmaCheck:
    """Draws random parameters (model.init with `key`) and checks rank F_k = N.

    Raises ValueError if n_k < N (the lemma then says nothing).
    """
    x = validate.batch(x)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one training point for the rank lemma, got an empty batch")
    variables = jax.jit(model.init)(validate.key(key), jnp.asarray(x[:1]))
    F = feature_matrix(model, variables, x, layer, batch_size=batch_size)
    N, n_k = F.shape
    if n_k < N:
        raise ValueError(f"layer {layer!r} has n_k = {n_k} < N = {N}: the lemma needs a wide layer")
    r = numerical_rank(F, tol=tol)
    return LemmaCheck(str(layer), n_k, N, r, r.rank == N)


def feature_ranks(model: nn.Module, variables, x, layers: Sequence[str | int], **kw) -> dict:
    """{layer: RankResult} for several layers (e.g. the rank through depth)."""
    return {lay: numerical_rank(feature_matrix(model, variables, x, lay), **kw) for lay in layers}
