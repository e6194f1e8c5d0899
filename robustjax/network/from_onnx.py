"""ONNX models as `robustjax.network.Graph`s, so a PyTorch (or any other framework's) model can be verified.

    graph = from_onnx("net.onnx")          # or an onnx.ModelProto
    logits = network.evaluate(graph, x)    # x `[batch, *graph.input_shape]`, in the ONNX layout (e.g. NCHW)

Supported operators (inference semantics): Gemm, MatMul (with a constant), Add / Sub / Mul / Div (with a
constant, or Add / Sub of two tensors), Conv, Relu, LeakyRelu and Clip (as ReLUs, affine layers and Adds),
Sigmoid, Tanh, Softplus, MaxPool, AveragePool (padding counted or not), GlobalAveragePool, BatchNormalization (folded into an affine layer), Flatten, Reshape
(constant shape), Unsqueeze, Transpose, Concat, Constant, Identity, Dropout. Input normalization inside the
graph stays in it (Sub / Div become affine layers). Shape arithmetic on constants is folded while reading:
Shape of a graph tensor (its batch entry a marker that Reshape takes as the batch axis), Gather, Unsqueeze and
Concat of constants, as `torch.onnx.export` writes `x.view(x.size(0), -1)` for a dynamic batch axis. The
torch exporter's thresholded softplus, `Where(Greater(x, t), x, Softplus(x))` with t >= 16, is read as
Softplus (the two branches differ by less than exp(-t) < 1.2e-7, under half a float32 ulp of x > t). Any
other operator, or an unsupported attribute, raises a ValueError naming the operator and the node. Needs the
`onnx` package (`pip install robustjax[onnx]`).
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from robustjax.network.evaluate import JAX
from robustjax.network.graph import (Activation, Add, Affine, Concatenate, Conv, Dense, Flatten, Graph, MaxPool, Node,
                                     ReLU, Reshape, Transpose)


class _Builder:
    def __init__(self, input_name, input_shape):
        self.nodes: list[Node] = []
        self.ids = {input_name: 0}          # tensor name -> node id
        self.shapes = {0: tuple(input_shape)}
        self.consts: dict = {}
        self.conds: dict = {}               # Greater outputs: name -> (tensor name, threshold), read by Where

    def add(self, layer, inputs, out_name):
        ids = tuple(self.ids[i] if isinstance(i, str) else i for i in inputs)
        shapes = [jax.ShapeDtypeStruct((1,) + self.shapes[i], jnp.float32) for i in ids]
        out = jax.eval_shape(lambda *xs: JAX[type(layer)](layer, *xs), *shapes)
        self.nodes.append(Node(layer, ids))
        k = len(self.nodes)
        self.shapes[k] = tuple(out.shape[1:])
        if out_name is not None:
            self.ids[out_name] = k
        return k


def _fail(node, why):
    raise ValueError(f"from_onnx: node {node.name or '(unnamed)'} ({node.op_type}): {why}")


def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _example_const(c, shape, node):
    """A constant broadcast against [batch, *shape] as a per-example array."""
    c = np.asarray(c, np.float64)
    if c.ndim == len(shape) + 1:
        if c.shape[0] != 1:
            _fail(node, f"a constant of shape {c.shape} varies over the batch axis")
        c = c[0]
    try:
        if np.broadcast_shapes(c.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        _fail(node, f"a constant of shape {c.shape} does not broadcast against the example shape {shape}")
    return c


def _gemm(b, node, a):
    A, B_, C = node.input[0], node.input[1], node.input[2] if len(node.input) > 2 and node.input[2] else None
    if A not in b.ids or B_ not in b.consts:
        _fail(node, "only x @ constant is supported (the first input a tensor, the second an initializer)")
    if a.get("transA", 0):
        _fail(node, "transA = 1 is not supported")
    W = np.asarray(b.consts[B_], np.float64)
    W = W.T if a.get("transB", 0) else W
    W = a.get("alpha", 1.0) * W
    bias = np.zeros(W.shape[1]) if C is None else a.get("beta", 1.0) * np.broadcast_to(b.consts[C], (W.shape[1],))
    b.add(Dense(W, np.asarray(bias, np.float64)), [A], node.output[0])


def _matmul(b, node, a):
    x, w = node.input
    if x in b.ids and w in b.consts:
        W = np.asarray(b.consts[w], np.float64)
        if W.ndim != 2:
            _fail(node, f"the constant operand must be a matrix, got shape {W.shape}")
        b.add(Dense(W, np.zeros(W.shape[1])), [x], node.output[0])
    else:
        _fail(node, "only x @ constant is supported")


def _binary(op):
    def handler(b, node, a):
        x, y = node.input
        if x in b.ids and y in b.ids:
            if op == "Add":
                b.add(Add(), [x, y], node.output[0])
            elif op == "Sub":
                neg = b.add(Affine(np.asarray(-1.0), np.asarray(0.0)), [y], None)
                b.add(Add(), [b.ids[x], neg], node.output[0])
            else:
                _fail(node, "a product or quotient of two tensors is not a layer")
            return
        if x in b.consts and y in b.consts:
            b.consts[node.output[0]] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                                        "Div": np.divide}[op](b.consts[x], b.consts[y])
            return
        t, c = (x, y) if x in b.ids else (y, x)
        if t not in b.ids or c not in b.consts:
            _fail(node, f"operands {x!r}, {y!r} are neither tensors of the graph nor constants")
        cv = _example_const(b.consts[c], b.shapes[b.ids[t]], node)
        const_first = t == y
        if op == "Add":
            layer = Affine(np.asarray(1.0), cv)
        elif op == "Sub":
            layer = Affine(np.asarray(-1.0), cv) if const_first else Affine(np.asarray(1.0), -cv)
        elif op == "Mul":
            layer = Affine(cv, np.asarray(0.0))
        else:
            if const_first:
                _fail(node, "constant / tensor is not an affine layer")
            layer = Affine(1.0 / cv, np.asarray(0.0))
        b.add(layer, [t], node.output[0])
    return handler


def _pads(a, nd, node):
    pads = list(a.get("pads", [0] * (2 * nd)))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        _fail(node, f"auto_pad {a['auto_pad']!r} is not supported (export with explicit pads)")
    return tuple((int(pads[i]), int(pads[i + nd])) for i in range(nd))


def _conv(b, node, a):
    x, w = node.input[0], node.input[1]
    if w not in b.consts:
        _fail(node, "the kernel must be a constant")
    W = np.asarray(b.consts[w], np.float64)
    nd = W.ndim - 2
    if nd != 2:
        _fail(node, f"only 2-D convolutions are supported, got {nd}-D")
    bias = np.zeros(W.shape[0]) if len(node.input) < 3 or not node.input[2] else np.asarray(b.consts[node.input[2]])
    in_shape = b.shapes[b.ids[x]]
    dn = lax.conv_dimension_numbers((1,) + in_shape, W.shape, ("NCHW", "OIHW", "NCHW"))
    layer = Conv(W, bias.reshape(-1, 1, 1).astype(np.float64), tuple(a.get("strides", [1] * nd)), _pads(a, nd, node),
                 (1,) * nd, tuple(a.get("dilations", [1] * nd)), dn, int(a.get("group", 1)))
    b.add(layer, [x], node.output[0])


def _pool_common(a, node, in_shape):
    k = tuple(a["kernel_shape"])
    if len(k) != 2 or len(in_shape) != 3:
        _fail(node, "only 2-D pooling of [C, H, W] tensors is supported")
    if a.get("ceil_mode", 0):
        _fail(node, "ceil_mode = 1 is not supported")
    if tuple(a.get("dilations", (1, 1))) != (1, 1):
        _fail(node, "dilated pooling is not supported")
    return k, tuple(a.get("strides", [1, 1])), _pads(a, 2, node)


def _maxpool(b, node, a):
    x = node.input[0]
    if len(node.output) > 1 and node.output[1]:
        _fail(node, "the Indices output is not supported")
    k, s, pads = _pool_common(a, node, b.shapes[b.ids[x]])
    b.add(MaxPool((1,) + k, (1,) + s, ((0, 0),) + pads), [x], node.output[0])


def _avgpool(b, node, a):
    """A depthwise Conv of 1 / (k0 k1); with uncounted padding (count_include_pad = 0) then an Affine scale
    k0 k1 / (the window's count of real entries at each output position): still a fixed linear map."""
    x = node.input[0]
    in_shape = b.shapes[b.ids[x]]
    C = in_shape[0]
    k, s, pads = _pool_common(a, node, in_shape)
    W = np.full((C, 1) + k, 1.0 / (k[0] * k[1]))
    dn = lax.conv_dimension_numbers((1,) + in_shape, W.shape, ("NCHW", "OIHW", "NCHW"))
    conv = Conv(W, np.zeros((C, 1, 1)), s, pads, (1, 1), (1, 1), dn, C)
    if all(p == (0, 0) for p in pads) or a.get("count_include_pad", 0):
        b.add(conv, [x], node.output[0])
        return
    ones = jnp.ones((1, 1) + in_shape[1:], jnp.float32)
    count = np.asarray(lax.conv_general_dilated(ones, jnp.ones((1, 1) + k, jnp.float32), s, pads))[0]   # [1, Ho, Wo]
    summed = b.add(conv, [x], None)
    b.add(Affine(k[0] * k[1] / count.astype(np.float64), np.zeros((1, 1, 1))), [summed], node.output[0])


def _leaky_relu(b, node, a):
    """alpha x + (1 - alpha) relu(x): ReLU, two Affine scales and an Add (piecewise affine, as the bounds read it)."""
    x = node.input[0]
    alpha = float(a.get("alpha", 0.01))
    tail = (1,) * len(b.shapes[b.ids[x]])
    r = b.add(ReLU(), [x], None)
    pos = b.add(Affine(np.full(tail, 1.0 - alpha), np.zeros(tail)), [r], None)
    lin = b.add(Affine(np.full(tail, alpha), np.zeros(tail)), [x], None)
    b.add(Add(), [pos, lin], node.output[0])


def _clip(b, node, a):
    """clip(x, lo, hi) = lo + relu(x - lo) - relu(x - hi) (and the one-sided forms), from scalar constant bounds
    (inputs 2 and 3 from opset 11, attributes min / max before)."""
    x = node.input[0]
    bounds = []
    for i, name in ((1, "min"), (2, "max")):
        if len(node.input) > i and node.input[i]:
            if node.input[i] not in b.consts or np.size(b.consts[node.input[i]]) != 1:
                _fail(node, f"the {name} bound must be a scalar constant")
            bounds.append(float(np.asarray(b.consts[node.input[i]]).reshape(())))
        else:
            v = a.get(name)
            bounds.append(None if v is None or abs(v) >= 3.0e38 else float(v))
    lo, hi = bounds
    if lo is not None and hi is not None and lo > hi:
        _fail(node, f"min {lo} > max {hi}")
    tail = (1,) * len(b.shapes[b.ids[x]])
    c = lambda v: np.full(tail, float(v))  # noqa: E731
    if lo is None and hi is None:
        b.ids[node.output[0]] = b.ids[x]
        return
    if hi is None:                                                   # lo + relu(x - lo)
        r = b.add(ReLU(), [b.add(Affine(c(1), c(-lo)), [x], None)], None)
        b.add(Affine(c(1), c(lo)), [r], node.output[0])
        return
    if lo is None:                                                   # hi - relu(hi - x)
        r = b.add(ReLU(), [b.add(Affine(c(-1), c(hi)), [x], None)], None)
        b.add(Affine(c(-1), c(hi)), [r], node.output[0])
        return
    up = b.add(ReLU(), [b.add(Affine(c(1), c(-lo)), [x], None)], None)
    over = b.add(ReLU(), [b.add(Affine(c(1), c(-hi)), [x], None)], None)
    neg = b.add(Affine(c(-1), c(lo)), [over], None)
    b.add(Add(), [up, neg], node.output[0])


def _batchnorm(b, node, a):
    x, scale, bias, mean, var = node.input[:5]
    for n in (scale, bias, mean, var):
        if n not in b.consts:
            _fail(node, "scale, bias, mean and variance must be constants (inference mode)")
    s = np.asarray(b.consts[scale], np.float64) / np.sqrt(np.asarray(b.consts[var], np.float64) + a.get("epsilon", 1e-5))
    t = np.asarray(b.consts[bias], np.float64) - np.asarray(b.consts[mean], np.float64) * s
    shape = b.shapes[b.ids[x]]
    tail = (1,) * (len(shape) - 1)
    b.add(Affine(s.reshape((-1,) + tail), t.reshape((-1,) + tail)), [x], node.output[0])


def _flatten(b, node, a):
    if a.get("axis", 1) != 1:
        _fail(node, f"only axis = 1 is supported, got {a.get('axis')}")
    b.add(Flatten(), [node.input[0]], node.output[0])


def _reshape(b, node, a):
    x, shp = node.input[:2]
    if shp not in b.consts:
        _fail(node, "the target shape must be a constant")
    shape = [int(v) for v in np.asarray(b.consts[shp]).reshape(-1)]
    in_shape = b.shapes[b.ids[x]]
    if a.get("allowzero", 0) and 0 in shape:
        _fail(node, f"allowzero = 1 with a 0 in the target shape {shape} makes an empty tensor")
    if BATCH in shape[1:]:
        _fail(node, "the batch size enters the target shape beyond its first axis")
    if shape and shape[0] == BATCH:
        shape[0] = -1
    if not shape or shape[0] not in (-1, 0, 1):
        _fail(node, f"the first axis must stay the batch axis, got target shape {shape}")
    rest = [in_shape[i - 1] if v == 0 and i - 1 < len(in_shape) else v for i, v in enumerate(shape[1:], 1)]
    size = int(np.prod(in_shape))
    if -1 in rest:
        known = int(np.prod([v for v in rest if v != -1]))
        rest = [size // known if v == -1 else v for v in rest]
    if int(np.prod(rest)) != size:
        _fail(node, f"cannot reshape an example of shape {in_shape} to {shape}")
    b.add(Reshape(tuple(rest)), [x], node.output[0])


def _transpose(b, node, a):
    perm = list(a.get("perm", []))
    if not perm or perm[0] != 0:
        _fail(node, f"the batch axis must stay first, got perm {perm}")
    b.add(Transpose(tuple(p - 1 for p in perm[1:])), [node.input[0]], node.output[0])


def _concat(b, node, a):
    axis = int(a["axis"])
    if all(i in b.consts for i in node.input):
        b.consts[node.output[0]] = np.concatenate([np.asarray(b.consts[i]) for i in node.input], axis)
        return
    if not all(i in b.ids for i in node.input):
        _fail(node, "concatenating graph tensors with constants is not supported")
    nd = len(b.shapes[b.ids[node.input[0]]]) + 1
    axis = axis + nd if axis < 0 else axis
    if axis == 0:
        _fail(node, "concatenation along the batch axis is not supported")
    b.add(Concatenate(axis - 1), list(node.input), node.output[0])


def _constant(b, node, a):
    import onnx.numpy_helper as nh
    if "value" in a:
        b.consts[node.output[0]] = nh.to_array(a["value"])
    elif set(a) & {"value_float", "value_floats", "value_int", "value_ints"}:
        k = next(k for k in ("value_float", "value_floats", "value_int", "value_ints") if k in a)
        b.consts[node.output[0]] = np.asarray(a[k], np.float32 if "float" in k else np.int64)
    else:
        _fail(node, f"only the 'value' and 'value_float(s)' / 'value_int(s)' attributes are supported, got {sorted(a)}")


def _alias(b, node, a):
    src = node.input[0]
    if src in b.ids:
        b.ids[node.output[0]] = b.ids[src]
    else:
        b.consts[node.output[0]] = b.consts[src]


#: The batch entry of a Shape output: the batch size is not known while reading, and only Reshape's first
#: entry may use it (anywhere else, or after arithmetic, the shape check of Reshape fails).
BATCH = 2 ** 62 + 12345


def _shape(b, node, a):
    x = node.input[0]
    if x in b.consts:
        full = np.asarray(np.shape(b.consts[x]), np.int64)
    else:
        full = np.asarray((BATCH,) + b.shapes[b.ids[x]], np.int64)
    n = len(full)
    start, end = int(a.get("start", 0)), int(a.get("end", n))
    b.consts[node.output[0]] = full[slice(max(-n, min(n, start)), max(-n, min(n, end)))]


def _const_inputs(b, node, names):
    for i in names:
        if i not in b.consts:
            _fail(node, f"only constant operands are supported here ({i!r} depends on the input)")
    return [np.asarray(b.consts[i]) for i in names]


def _gather(b, node, a):
    data, idx = _const_inputs(b, node, node.input[:2])
    b.consts[node.output[0]] = np.take(data, idx.astype(np.int64), axis=int(a.get("axis", 0)))


def _unsqueeze(b, node, a):
    x = node.input[0]
    if "axes" in a:                                     # opset < 13
        axes = [int(v) for v in a["axes"]]
    else:
        if len(node.input) < 2 or node.input[1] not in b.consts:
            _fail(node, "the axes must be a constant")
        axes = [int(v) for v in np.asarray(b.consts[node.input[1]]).reshape(-1)]
    if x in b.consts:
        b.consts[node.output[0]] = np.expand_dims(np.asarray(b.consts[x]), tuple(axes))
        return
    shape = b.shapes[b.ids[x]]
    nd = len(shape) + 1 + len(axes)
    axes = sorted(ax + nd if ax < 0 else ax for ax in axes)
    if 0 in axes:
        _fail(node, "a new axis before the batch axis is not supported")
    out = list(shape)
    for ax in axes:
        out.insert(ax - 1, 1)
    b.add(Reshape(tuple(out)), [x], node.output[0])


def _greater(b, node, a):
    x, t = node.input
    if x not in b.ids or t not in b.consts or np.size(b.consts[t]) != 1:
        _fail(node, "only a graph tensor compared with a scalar constant is supported (the torch softplus threshold)")
    b.conds[node.output[0]] = (x, float(np.asarray(b.consts[t]).reshape(())))


def _where(b, node, a):
    cond, x, y = node.input
    hit = b.conds.get(cond)
    k = b.ids.get(y)
    src = b.nodes[k - 1] if k else None
    if (hit is None or x not in b.ids or b.ids[hit[0]] != b.ids[x] or src is None
            or not isinstance(src.layer, Activation) or src.layer.kind != "softplus" or src.inputs != (b.ids[x],)):
        _fail(node, "only the thresholded softplus Where(Greater(x, t), x, Softplus(x)) is supported")
    if hit[1] < 16:
        _fail(node, f"a softplus threshold {hit[1]} < 16 is not softplus within float32 rounding")
    b.ids[node.output[0]] = k


def _global_avgpool(b, node, a):
    x = node.input[0]
    shape = b.shapes[b.ids[x]]
    if len(shape) != 3:
        _fail(node, "only 2-D pooling of [C, H, W] tensors is supported")
    _avgpool(b, node, {"kernel_shape": list(shape[1:])})


def _act(layer):
    def handler(b, node, a):
        b.add(layer, [node.input[0]], node.output[0])
    return handler


#: ONNX operator -> handler(builder, node, attributes).
OPS = {
    "Gemm": _gemm, "MatMul": _matmul, "Add": _binary("Add"), "Sub": _binary("Sub"), "Mul": _binary("Mul"),
    "Div": _binary("Div"), "Conv": _conv, "Relu": _act(ReLU()), "Sigmoid": _act(Activation("sigmoid")),
    "Tanh": _act(Activation("tanh")), "Softplus": _act(Activation("softplus")), "MaxPool": _maxpool,
    "AveragePool": _avgpool, "BatchNormalization": _batchnorm, "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": _transpose, "Concat": _concat, "Constant": _constant, "Identity": _alias, "Dropout": _alias,
    "Shape": _shape, "Gather": _gather, "Unsqueeze": _unsqueeze, "Greater": _greater, "Where": _where,
    "GlobalAveragePool": _global_avgpool, "LeakyRelu": _leaky_relu, "Clip": _clip,
}


def from_onnx(model) -> Graph:
    """The Graph of an ONNX model (a path or an `onnx.ModelProto`) with one input `[batch, ...]` and one output
    `[batch, K]`; the graph's input_shape is the ONNX input's shape without the batch axis."""
    try:
        import onnx
        import onnx.numpy_helper as nh
    except ImportError as e:  # pragma: no cover
        raise ImportError("from_onnx needs the onnx package: pip install onnx (or robustjax[onnx])") from e
    if not isinstance(model, (str, Path)) and type(model).__name__ != "ModelProto":
        raise ValueError(f"from_onnx: model must be a path or an onnx.ModelProto, got {type(model).__name__}")
    if isinstance(model, (str, Path)):
        path = Path(model)
        try:
            model = onnx.load(str(path))
        except Exception as e:
            raise ValueError(f"from_onnx: cannot read ONNX model {path}: {e}") from e
    g = model.graph
    inits = {t.name: nh.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"from_onnx: the model must have one input and one output, got {len(inputs)} and {len(g.output)}")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        raise ValueError(f"from_onnx: the input must be [batch, ...] with known example dimensions, got {dims}")
    b = _Builder(inputs[0].name, dims[1:])
    b.consts.update(inits)
    for node in g.node:
        handler = OPS.get(node.op_type)
        if handler is None:
            _fail(node, f"operator {node.op_type} is not supported (supported: {', '.join(sorted(OPS))})")
        try:
            handler(b, node, _attrs(node))
        except ValueError:
            raise
        except KeyError as e:       # a tensor or an attribute the node needs is not there
            _fail(node, f"{e.args[0]!r} is not defined (an input computed before the node, an initializer, or a "
                        "required attribute)")
        except (TypeError, IndexError) as e:     # e.g. shapes that do not fit (JAX's shape checks)
            _fail(node, f"{type(e).__name__}: {e}")
    out = g.output[0].name
    if out not in b.ids:
        raise ValueError(f"from_onnx: the output {out!r} does not depend on the input")
    k = b.ids[out]
    if k != len(b.nodes):
        raise ValueError("from_onnx: the output is not the last layer computed (unused branches)")
    if len(b.shapes[k]) != 1:
        raise ValueError(f"from_onnx: the output must be [batch, K], got example shape {b.shapes[k]}")
    return Graph(tuple(b.nodes), tuple(dims[1:]))
