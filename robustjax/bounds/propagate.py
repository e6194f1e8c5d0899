"""Sound output bounds of any network over l_p balls in boxes: one call shape for every method.

    lower = linear_bounds(net, x, C, *, eps, p, box, method)        # [B, m] lower bounds of C f(x')
    margins = margin_bounds(net, x, labels, *, eps, p, box, method)  # [B, K] lower bounds of f_y - f_j

net: a `robustjax.network.Graph`, a sequence of its layers, or a jittable batched `logits_fn` (traced with
`network.trace` on x's example shape). x `[B, ...]`, eps a scalar or `[B]` (radius in the l_p norm of the
input space), box as `geometry.as_box` (scalar, per pixel or per example; default [0, 1]).
method: 'ibp' (interval bounds), 'crown-ibp' (CROWN on the output, IBP inside), 'crown' (CROWN everywhere),
'alpha-crown' (CROWN with slopes optimized for the output specification).

Guarantee: computed in float64 (each step padded by a bound on its own rounding), every bound holds for every
x' in the set, for the network in exact arithmetic on its weights (dtype None) or for the network evaluated in
`dtype` with any summation order (its rounding enters as bounded perturbations of every layer, see
`rounding`). `margin_bounds` defaults to dtype float32: a positive margin bound then means that the model as
users run it classifies every x' of the set as the label.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import geometry, validate
from robustjax.bounds import crown
from robustjax.bounds.ibp import Interval
from robustjax.network.evaluate import JAX, NUMPY, evaluate_numpy, interpret, pool_windows
from robustjax.network.function import Structure, floating_as, join, split
from robustjax.network.graph import Graph, as_graph

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def as_network(net, example_shape) -> Graph:
    """A Graph from a Graph, a layer sequence or a jittable logits_fn (traced on example_shape)."""
    if isinstance(net, Graph) or isinstance(net, (list, tuple)):
        g = as_graph(net, example_shape)
        return g if g.input_shape is not None else g._replace(input_shape=tuple(example_shape))
    if callable(net):
        from robustjax.network import trace
        try:
            return trace(net, example_shape)
        except ValueError:
            raise
        except Exception as e:     # e.g. Flax's shape errors for inputs the model was not built for
            raise validate.model_error(e, f"net (a logits_fn) fails on inputs of example shape "
                                          f"{tuple(example_shape)} (x's)") from e
    raise ValueError(f"net must be a network Graph, a sequence of layers or a logits_fn, got {type(net).__name__}")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def input_set(x, eps, p, box) -> crown.InputSet:
    """The float64 `crown.InputSet` of l_p balls of radii eps (scalar or `[B]`, inf allowed) around x in the box."""
    x = validate.batch(x, "x")
    n = x.shape[0]
    b = geometry.as_box(box, np.asarray(x))
    lo, hi = np.asarray(b.lo, np.float64).reshape(n, -1), np.asarray(b.hi, np.float64).reshape(n, -1)
    xf = np.asarray(x, np.float64).reshape(n, -1)
    if np.any(xf < lo - 1e-6) or np.any(xf > hi + 1e-6):
        raise ValueError("x lies outside the box: the input set is an l_p ball around x intersected with the box")
    e = validate.per_example(eps, n, "eps", allow_inf=True)
    e = np.minimum(e, 1e30)
    return crown.InputSet(jnp.asarray(np.clip(xf, lo, hi)), jnp.asarray(e), jnp.asarray(lo), jnp.asarray(hi),
                          geometry.check_norm(p))


_CACHE: dict = {}


@functools.lru_cache(maxsize=32)
def _program(structure: Structure, shapes: tuple, method: str, p: float, dtype: str | None,
             alpha_intermediate: bool, alpha_lr: float):
    alpha = method == "alpha-crown"
    arith = None if dtype is None else np.dtype(dtype)

    def run(weights, steps, center, eps, lo, hi, C, given):
        g = join(structure, weights)
        s = crown.InputSet(center, eps, lo, hi, p)
        inner = "ibp" if method in ("ibp", "crown-ibp") else "crown"
        bounds, relax, errors = crown.intermediate_bounds(g, s, shapes, method=inner, arith=arith,
                                                          alpha_steps=steps if alpha and alpha_intermediate else 0,
                                                          alpha_lr=alpha_lr, given=given)
        if method == "ibp":
            low = crown.ibp_spec_lower(bounds, C)
        elif alpha:
            low = crown.alpha_spec_lower(g, s, C, shapes, bounds, relax, steps=steps, lr=alpha_lr, errors=errors)
        else:
            low = crown.spec_lower(g, s, C, shapes, bounds, relax, errors)
        return low, bounds
    return jax.jit(run)


def compiled(graph: Graph, method: str, p: float, dtype=None, *, alpha_intermediate: bool = False,
             alpha_lr: float = 0.1) -> Callable:
    """fn(alpha_steps, center, eps, lo, hi, C) -> (spec lower bounds `[B, m]`, the bounds of every node), in the
    dtype of its arguments (float64 under `jax.enable_x64`). One program per network structure (`network.split`:
    the weights are arguments, so nets of one architecture share it), options and argument shapes; alpha_steps
    is an argument, so every step count shares it too. alpha_intermediate (alpha-crown only): every
    intermediate bound's slopes are optimized too (`crown.intermediate_bounds`), not only the output's.
    given (optional keyword of fn): known bounds of every node `[Interval]`, intersected as they are computed."""
    key = (id(graph), method, p, None if dtype is None else np.dtype(dtype).name, alpha_intermediate, alpha_lr)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is graph:
        return hit[1]
    structure, arrays = split(graph)
    shapes = tuple(crown.node_shapes(graph, graph.input_shape))
    jitted = _program(structure, shapes, method, float(p), key[3], bool(alpha_intermediate), float(alpha_lr))

    weights = {}                       # converted once per x64 mode (float64 needs it), not on every call

    def fn(steps, center, eps, lo, hi, C, given=None):
        mode = bool(jax.config.jax_enable_x64)
        if mode not in weights:
            weights[mode] = floating_as(arrays, jnp.float64)
        return jitted(weights[mode], jnp.asarray(steps, jnp.int32), center, eps, lo, hi, C, given)
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = (graph, fn)
    return fn


@functools.lru_cache(maxsize=32)
def _node_bounds_program(structure: Structure, shapes: tuple, method: str, p: float):
    def run(weights, center, eps, lo, hi):
        s = crown.InputSet(center, eps, lo, hi, p)
        return crown.intermediate_bounds(join(structure, weights), s, shapes, method=method)[0]
    return jax.jit(run)


def node_bounds(graph: Graph, s: crown.InputSet, method: str = "crown") -> list:
    """`crown.intermediate_bounds(graph, s, ...)`'s bounds of every node (method 'ibp' or 'crown'), as one jitted
    program per network structure, shapes, method and norm: the weights and the input set are its arguments (in
    the input set's dtype), so nets of one architecture share it."""
    structure, arrays = split(graph)
    shapes = tuple(crown.node_shapes(graph, graph.input_shape))
    fn = _node_bounds_program(structure, shapes, method, float(s.p))
    return fn(floating_as(arrays, s.center.dtype), s.center, s.eps, s.lo, s.hi)


def _run(net, x, C, *, eps, p, box, method, alpha_steps, dtype):
    check_method(method)
    validate.positive_int(alpha_steps, "alpha_steps", allow_zero=True)
    if dtype is not None and not (isinstance(dtype, (type, np.dtype, str)) and
                                  np.issubdtype(np.dtype(dtype), np.floating)):
        raise ValueError(f"dtype must be None (exact arithmetic) or a floating dtype, got {dtype!r}")
    x = validate.batch(x, "x")
    graph = as_network(net, x.shape[1:])
    if graph.input_shape is not None and tuple(graph.input_shape) != tuple(x.shape[1:]):
        raise ValueError(f"x has example shape {tuple(x.shape[1:])}, the network expects {tuple(graph.input_shape)}")
    K = crown.node_shapes(graph, graph.input_shape)[-1][0]
    if C.shape[-1] != K:
        raise ValueError(f"C must have K = {K} columns (the network's outputs), got shape {C.shape}")
    with jax.enable_x64(True):
        s = input_set(x, eps, p, box)
        fn = compiled(graph, method, s.p, dtype)
        if x.shape[0] == 0:
            return np.zeros((0, C.shape[1])), np.zeros((0, K)), np.zeros((0, K))
        low, bounds = fn(int(alpha_steps), s.center, s.eps, s.lo, s.hi, jnp.asarray(C, jnp.float64))
        return np.asarray(low), np.asarray(bounds[-1].lo), np.asarray(bounds[-1].hi)


def linear_bounds(net, x, C, *, eps, p=np.inf, box=None, method: str = "crown", alpha_steps: int = 20,
                  dtype=None) -> np.ndarray:
    """Lower bounds `[B, m]` of C[b] f(x') over each example's set; C `[m, K]` or `[B, m, K]`; for the network in
    exact arithmetic (dtype None) or evaluated in dtype."""
    x = validate.batch(x, "x")
    C = np.asarray(C, np.float64)
    if C.ndim == 2:
        C = np.broadcast_to(C, (x.shape[0],) + C.shape)
    if C.ndim != 3 or C.shape[0] != x.shape[0]:
        raise ValueError(f"C must have shape [m, K] or [batch, m, K]; got {C.shape} for a batch of {x.shape[0]}")
    low, _, _ = _run(net, x, C, eps=eps, p=p, box=box, method=method, alpha_steps=alpha_steps, dtype=dtype)
    return low


def output_bounds(net, x, *, eps, p=np.inf, box=None, method: str = "crown", alpha_steps: int = 20) -> Interval:
    """Elementwise bounds `[B, K]` of the logits over each example's set (exact arithmetic)."""
    x = validate.batch(x, "x")
    graph = as_network(net, x.shape[1:])
    K = crown.node_shapes(graph, graph.input_shape)[-1][0]
    E = np.concatenate([np.eye(K), -np.eye(K)])
    low = linear_bounds(graph, x, E, eps=eps, p=p, box=box, method=method, alpha_steps=alpha_steps)
    return Interval(low[:, :K], -low[:, K:])


def margin_specs(labels, K: int) -> np.ndarray:
    """C `[B, K, K]` with rows e_y - e_j (row y is zero): C f = f_y - f_j."""
    labels = np.asarray(labels)
    C = np.eye(K)[labels][:, None, :] - np.eye(K)[None, :, :]
    return C


def margin_bounds(net, x, labels, *, eps, p=np.inf, box=None, method: str = "crown", alpha_steps: int = 20,
                  dtype=np.float32) -> np.ndarray:
    """Lower bounds `[B, K]` of f_y(x') - f_j(x') over each example's set, +inf at j = y; with dtype (default
    float32) they also hold for the network evaluated in that dtype (dtype=None: exact arithmetic only)."""
    x = validate.batch(x, "x")
    graph = as_network(net, x.shape[1:])
    K = crown.node_shapes(graph, graph.input_shape)[-1][0]
    y = validate.labels(labels, x.shape[0], K)
    C = margin_specs(y, K)
    low, _, _ = _run(graph, x, C, eps=eps, p=p, box=box, method=method, alpha_steps=alpha_steps, dtype=dtype)
    low = np.array(low)
    low[np.arange(len(y)), y] = np.inf
    return low


def predict_float64(net, x) -> np.ndarray:
    """argmax of the network evaluated in float64 numpy, `[B]`."""
    x = validate.batch(x, "x")
    graph = as_network(net, x.shape[1:])
    return np.argmax(evaluate_numpy(graph, np.asarray(x, np.float64)), -1).astype(np.int32)
