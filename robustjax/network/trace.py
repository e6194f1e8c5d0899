"""`trace(logits_fn, input_shape)`: a jittable batched logits_fn read into a `Graph`.

The function is traced to a jaxpr on a batch of two examples `[2, *input_shape]` (so that an operation mixing
examples shows in the shapes); every equation whose operands are all
constants (weights, reshaped biases) is evaluated on the spot, every other one becomes a layer by a table
keyed by primitive name (`PRIMITIVES`): dot_general with a constant -> Dense, conv_general_dilated -> Conv,
add / sub / mul / div / neg with constants -> Affine (a bias added right after a Dense or Conv is folded into
it), add of two nodes -> Add, max(x, 0) -> ReLU, reduce_window_max -> MaxPool, reshape -> Reshape / Flatten,
transpose, concatenate, tanh / logistic -> Activation; calls (jit, custom_jvp, ...) named after an activation
(relu, softplus, sigmoid, silu, gelu, elu) become that layer, others are traced through. Anything else,
and any operation that mixes examples of the batch, is a ValueError naming the primitive.
"""
from __future__ import annotations

import collections
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from robustjax.network.evaluate import JAX
from robustjax.network.graph import (Activation, Add, Affine, Concatenate, Conv, Dense, Flatten, Graph, MaxPool,
                                     Node, ReLU, Reshape, Transpose)

_CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
          "remat", "checkpoint", "custom_lin")
NAMED_ACTIVATIONS = {"relu": ReLU(), "softplus": Activation("softplus"), "sigmoid": Activation("sigmoid"),
                     "silu": Activation("silu"), "swish": Activation("silu"), "gelu": Activation("gelu"),
                     "elu": Activation("elu")}


_B = 2   # the batch size traced


class _Ref(NamedTuple):
    """A traced value that depends on the input: node id and shape `[_B, ...]`."""
    id: int
    shape: tuple


class _Builder:
    def __init__(self):
        self.nodes: list[Node] = []
        self.consumed: set[int] = set()

    def add(self, layer, *inputs: _Ref, shape) -> _Ref:
        for r in inputs:
            self.consumed.add(r.id)
        self.nodes.append(Node(layer, tuple(r.id for r in inputs)))
        return _Ref(len(self.nodes), tuple(shape))

    def foldable(self, ref: _Ref, uses: int) -> bool:
        """ref is the last node, read by nothing yet and by one equation only: it may be rewritten in place."""
        return uses == 1 and ref.id == len(self.nodes) and ref.id not in self.consumed


def _fail(eqn, why):
    raise ValueError(f"network.trace: cannot represent primitive {eqn.primitive.name!r}: {why}")


def _example_const(c, ref: _Ref, eqn):
    """A constant operand as a per-example array broadcastable against ref's example shape."""
    c = np.asarray(c)
    if c.ndim == len(ref.shape):
        if c.shape[0] != 1:
            _fail(eqn, "a constant with a batch axis of size > 1")
        c = c[0]
    try:
        fits = np.broadcast_shapes(c.shape, ref.shape[1:]) == ref.shape[1:]
    except ValueError:
        fits = False
    if not fits:
        _fail(eqn, f"a constant of shape {c.shape} does not broadcast to the example shape {ref.shape[1:]}")
    return c


def _affine(b, eqn, ref, scale, shift):
    return b.add(Affine(np.asarray(scale), np.asarray(shift)), ref, shape=ref.shape)


def _shift(b, eqn, ref, c, uses):
    """ref + c: folded into the bias of the Dense or Conv that made ref when nothing else reads it."""
    c = _example_const(c, ref, eqn)
    if b.foldable(ref, uses[0]):
        layer = b.nodes[-1].layer
        if isinstance(layer, Dense):
            b.nodes[-1] = b.nodes[-1]._replace(layer=layer._replace(b=layer.b + c))
            return ref
        if isinstance(layer, Conv):
            b.nodes[-1] = b.nodes[-1]._replace(layer=layer._replace(bias=layer.bias + c))
            return ref
    return _affine(b, eqn, ref, 1.0, c)


def _add(b, eqn, a, c, uses):
    if isinstance(a, _Ref) and isinstance(c, _Ref):
        if a.shape != c.shape:
            _fail(eqn, f"adding nodes of shapes {a.shape} and {c.shape} (broadcasting)")
        return b.add(Add(), a, c, shape=a.shape)
    if isinstance(c, _Ref):
        a, c, uses = c, a, uses[::-1]
    return _shift(b, eqn, a, c, uses)


def _sub(b, eqn, a, c, uses):
    if isinstance(a, _Ref) and isinstance(c, _Ref):
        return _add(b, eqn, a, _affine(b, eqn, c, -1.0, 0.0), (uses[0], 1))
    if isinstance(a, _Ref):
        return _shift(b, eqn, a, -np.asarray(c), uses)
    return _affine(b, eqn, c, -1.0, _example_const(a, c, eqn))


def _mul(b, eqn, a, c, uses):
    if isinstance(a, _Ref) and isinstance(c, _Ref):
        _fail(eqn, "a product of two input-dependent values is not a layer")
    if isinstance(c, _Ref):
        a, c = c, a
    return _affine(b, eqn, a, _example_const(c, a, eqn), 0.0)


def _div(b, eqn, a, c, uses):
    if isinstance(c, _Ref):
        _fail(eqn, "division by an input-dependent value")
    return _affine(b, eqn, a, 1.0 / _example_const(c, a, eqn), 0.0)


def _max(b, eqn, a, c, uses):
    if isinstance(c, _Ref):
        a, c = c, a
    if isinstance(c, _Ref) or np.any(np.asarray(c) != 0):
        _fail(eqn, "only max(x, 0) (ReLU) is a layer")
    return b.add(ReLU(), a, shape=a.shape)


def _dot_general(b, eqn, a, w, uses):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if not isinstance(a, _Ref) or isinstance(w, _Ref) or lb or rb:
        _fail(eqn, "only x @ W with x the traced value and W a constant (no batch dimensions)")
    w = np.asarray(w)
    if w.ndim != 2 or tuple(lc) != (len(a.shape) - 1,) or tuple(rc) not in ((0,), (1,)):
        _fail(eqn, "only a contraction of the last axis with a matrix")
    W = w if tuple(rc) == (0,) else w.T
    return b.add(Dense(W, np.zeros(W.shape[1], W.dtype)), a,
                 shape=a.shape[:-1] + (W.shape[1],))


def _conv(b, eqn, a, k, uses):
    prm = eqn.params
    dn = prm["dimension_numbers"]
    if not isinstance(a, _Ref) or isinstance(k, _Ref) or prm["batch_group_count"] != 1 or dn.lhs_spec[0] != 0 \
            or dn.out_spec[0] != 0:
        _fail(eqn, "only a convolution of the traced value (batch axis 0) with a constant kernel")
    layer = Conv(np.asarray(k), np.zeros((), np.asarray(k).dtype), tuple(prm["window_strides"]),
                 tuple(map(tuple, prm["padding"])), tuple(prm["lhs_dilation"]), tuple(prm["rhs_dilation"]), dn,
                 int(prm["feature_group_count"]))
    return b.add(layer, a, shape=tuple(eqn.outvars[0].aval.shape))


def _reduce_window_max(b, eqn, a, uses):
    prm = eqn.params
    if any(d != 1 for d in tuple(prm["base_dilation"]) + tuple(prm["window_dilation"])):
        _fail(eqn, "dilated max-pooling")
    if prm["window_dimensions"][0] != 1 or prm["window_strides"][0] != 1 or tuple(prm["padding"][0]) != (0, 0):
        _fail(eqn, "pooling across the batch axis")
    layer = MaxPool(tuple(prm["window_dimensions"][1:]), tuple(prm["window_strides"][1:]),
                    tuple(map(tuple, prm["padding"][1:])))
    return b.add(layer, a, shape=tuple(eqn.outvars[0].aval.shape))


def _reshape(b, eqn, a, uses):
    new = tuple(eqn.params["new_sizes"])
    if eqn.params.get("dimensions") is not None or not new or new[0] != _B:
        _fail(eqn, f"a reshape of {a.shape} to {new} that moves the batch axis")
    if new == a.shape:
        return a
    return b.add(Flatten() if len(new) == 2 else Reshape(new[1:]), a, shape=new)


def _transpose(b, eqn, a, uses):
    perm = tuple(eqn.params["permutation"])
    if perm[0] != 0:
        _fail(eqn, "a transpose that moves the batch axis")
    return b.add(Transpose(tuple(q - 1 for q in perm[1:])), a, shape=tuple(eqn.outvars[0].aval.shape))


def _concatenate(b, eqn, *args):
    *ops, uses = args
    dim = eqn.params["dimension"]
    if dim == 0 or not all(isinstance(o, _Ref) for o in ops):
        _fail(eqn, "only a concatenation of traced values along an example axis")
    return b.add(Concatenate(dim - 1), *ops, shape=tuple(eqn.outvars[0].aval.shape))


def _identity(b, eqn, a, uses):
    if tuple(eqn.outvars[0].aval.shape) != a.shape:
        _fail(eqn, f"a change of shape {a.shape} -> {eqn.outvars[0].aval.shape}")
    return a


def _convert(b, eqn, a, uses):
    """A cast that keeps every value (to a floating dtype at least as precise) is the identity; any other rounds."""
    new, old = np.dtype(eqn.params["new_dtype"]), np.dtype(eqn.invars[0].aval.dtype)
    if not (np.issubdtype(new, np.floating) and np.finfo(new).bits >= np.finfo(old).bits):
        _fail(eqn, f"a cast from {old} to {new}, which rounds values (no layer for it)")
    return _identity(b, eqn, a, uses)


@functools.lru_cache(maxsize=256)
def _reference_body(name: str, shape: tuple, dtype) -> str:
    """The printed innermost body of jax.nn's own function `name` (a key of NAMED_ACTIVATIONS) on `shape`."""
    return str(_innermost(jax.make_jaxpr(getattr(jax.nn, name))(jax.ShapeDtypeStruct(shape, dtype)).jaxpr))


def _innermost(jaxpr):
    """The body of nested single calls (jit(custom_jvp(f)) -> f's body), else jaxpr itself."""
    while len(jaxpr.eqns) == 1 and jaxpr.eqns[0].primitive.name in _CALLS and sub_jaxpr(jaxpr.eqns[0]) is not None:
        jaxpr = sub_jaxpr(jaxpr.eqns[0])[0]
    return jaxpr


def _computes(eqn, layer) -> bool:
    """Whether a one-argument call's body computes `layer` elementwise: the body of jax.nn's function of that name
    (compared as printed jaxprs), or else equal to it on 101 points of [-6, 6]. A call named like an activation is
    taken for it only if it is that function."""
    body = sub_jaxpr(eqn)
    aval = eqn.invars[0].aval
    if body is None or not np.issubdtype(np.dtype(aval.dtype), np.floating):
        return False
    name = str(eqn.params.get("name", ""))
    if name in NAMED_ACTIVATIONS and str(_innermost(body[0])) == _reference_body(name, tuple(aval.shape),
                                                                          np.dtype(aval.dtype)):
        return True
    z = np.resize(np.linspace(-6.0, 6.0, 101), aval.shape).astype(aval.dtype)
    out = np.asarray(jcore.jaxpr_as_fun(jcore.ClosedJaxpr(body[0], body[1]))(z)[0], np.float64)
    ref = np.asarray(JAX[type(layer)](layer, jnp.asarray(z)), np.float64)
    return out.shape == ref.shape and bool(np.allclose(out, ref, rtol=1e-5, atol=1e-6))


def _activation(kind):
    return lambda b, eqn, a, uses: b.add(Activation(kind), a, shape=a.shape)


#: Primitive name -> handler(builder, eqn, *operands, uses) for equations with a traced operand.
PRIMITIVES: dict[str, Callable] = {
    "add": _add, "add_any": _add, "sub": _sub, "mul": _mul, "div": _div,
    "neg": lambda b, eqn, a, uses: _affine(b, eqn, a, -1.0, 0.0),
    "max": _max, "dot_general": _dot_general, "conv_general_dilated": _conv,
    "reduce_window_max": _reduce_window_max, "reshape": _reshape, "transpose": _transpose,
    "concatenate": _concatenate, "convert_element_type": _convert, "copy": _identity, "copy_p": _identity,
    "broadcast_in_dim": _identity, "squeeze": _identity,
    "tanh": _activation("tanh"), "logistic": _activation("sigmoid"),
}


def sub_jaxpr(eqn):
    """(jaxpr, consts) of a call equation's body (jit, custom_jvp, remat, ...), None if it has none."""
    for k in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(k)
        if isinstance(j, jcore.ClosedJaxpr):
            return j.jaxpr, j.consts
        if isinstance(j, jcore.Jaxpr):
            return j, []
    return None


def _sub_jaxpr(eqn):
    body = sub_jaxpr(eqn)
    if body is None:
        _fail(eqn, "a call whose body cannot be read")
    return body


def _trace_jaxpr(jaxpr, consts, args, b: _Builder):
    env = {}
    uses = collections.Counter(v for e in jaxpr.eqns for v in e.invars if not isinstance(v, jcore.Literal))
    uses.update(v for v in jaxpr.outvars if not isinstance(v, jcore.Literal))

    def read(v):
        return np.asarray(v.val) if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        traced = [isinstance(v, _Ref) for v in invals]
        if name in _CALLS:
            named = NAMED_ACTIVATIONS.get(str(eqn.params.get("name", "")))
            refs = [v for v in invals if isinstance(v, _Ref)]
            if named is not None and len(eqn.invars) == 1 and len(refs) == 1 and len(eqn.outvars) == 1 \
                    and tuple(eqn.outvars[0].aval.shape) == refs[0].shape and _computes(eqn, named):
                outvals = [b.add(named, refs[0], shape=refs[0].shape)]
            else:
                outvals = _trace_jaxpr(*_sub_jaxpr(eqn), invals, b)
        elif not any(traced):
            out = eqn.primitive.bind(*invals, **eqn.params)
            outvals = [np.asarray(o) for o in out] if eqn.primitive.multiple_results else [np.asarray(out)]
        elif name in PRIMITIVES:
            u = tuple(uses[v] if not isinstance(v, jcore.Literal) else 0 for v in eqn.invars)
            outvals = [PRIMITIVES[name](b, eqn, *invals, u)]
        else:
            _fail(eqn, "no layer for it (network.trace.PRIMITIVES lists the supported ones)")
        for v, o in zip(eqn.outvars, outvals):
            if not isinstance(v, jcore.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def trace(logits_fn: Callable, input_shape: Sequence[int], *, dtype=jnp.float32) -> Graph:
    """The Graph of a batched, jittable `logits_fn(x [batch, *input_shape]) -> [batch, K]`.

    ValueError naming the primitive for operations that are no layer of `robustjax.network` (control flow,
    gathers, products of activations, ...) or that mix examples of a batch.
    """
    input_shape = tuple(int(s) for s in input_shape)
    closed = jax.make_jaxpr(logits_fn)(jnp.zeros((_B,) + input_shape, dtype))
    b = _Builder()
    outs = _trace_jaxpr(closed.jaxpr, closed.consts, [_Ref(0, (_B,) + input_shape)], b)
    if len(outs) != 1 or not isinstance(outs[0], _Ref):
        raise ValueError("network.trace: logits_fn must return one array that depends on its input")
    if len(outs[0].shape) != 2 or outs[0].shape[0] != _B:
        raise ValueError(f"network.trace: logits_fn must return [batch, K], got shape {outs[0].shape[1:]} per example")
    nodes = b.nodes
    if outs[0].id != len(nodes):
        raise ValueError("network.trace: the output is not the last layer computed (unused branches)")
    return Graph(tuple(nodes), input_shape)
