"""A PyTorch user's path: `torch.onnx.export` -> `from_onnx` -> robustjax. Models built in torch (an MLP with its
input normalization inside, a CNN with BatchNorm and pools, a residual block) import to graphs that equal torch
on random inputs, whose IBP / CROWN bounds hold for torch's own outputs on points of the ball, and on which
`verify_property` decides a tiny box. The operators torch writes for a dynamic batch axis and for softplus
(Shape / Gather / Unsqueeze / Concat, Where / Greater) are also checked on graphs written with onnx.helper,
against onnxruntime, so that those checks run where torch is not installed (CI)."""
import inspect
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from robustjax import bounds  # noqa: E402
from robustjax.complete import verify_property  # noqa: E402
from robustjax.network import evaluate, evaluate_numpy  # noqa: E402
from robustjax.network.from_onnx import from_onnx  # noqa: E402

try:
    import torch
    from torch import nn
except ImportError:  # CI does not install torch: only the onnx.helper tests below run there
    torch = nn = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------------------------- torch models
def _mlp():
    class Normalize(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    torch.manual_seed(0)
    return nn.Sequential(Normalize([0.4, 0.5, 0.6, 0.45, 0.55, 0.5], [0.2, 0.25, 0.3, 0.22, 0.28, 0.3]),
                         nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.Sigmoid(), nn.Linear(12, 10), nn.Tanh(),
                         nn.Linear(10, 8), nn.Softplus(), nn.Linear(8, 3)), (6,)


def _cnn():
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.pool1, self.bn2 = nn.MaxPool2d(2), nn.BatchNorm2d(4)
            self.conv2, self.pool2 = nn.Conv2d(4, 4, 3, padding=1), nn.AvgPool2d(2)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            x = self.bn2(self.pool1(torch.relu(self.bn1(self.conv1(x)))))   # bn1 folds into conv1 on export
            x = self.pool2(torch.relu(self.conv2(x)))
            return self.fc(x.view(x.size(0), -1))                              # Shape/Gather/... with a dynamic batch

    torch.manual_seed(1)
    m = CNN()
    with torch.no_grad():                                                      # non-trivial running statistics
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return m, (1, 8, 8)


def _residual():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3))

        def forward(self, x):
            return self.head(x + self.conv2(torch.relu(self.conv1(x))))

    torch.manual_seed(2)
    return Residual(), (2, 5, 5)


MODELS = {"mlp": _mlp, "cnn": _cnn, "residual": _residual}
_EXPORTED: dict = {}


def _export(model, shape, path, opset=17, **kw):
    """torch.onnx.export with the TorchScript exporter: since torch 2.9 the default is the dynamo exporter,
    which needs onnxscript (not a dependency of this project); `dynamo=False` needs only torch and onnx."""
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw.setdefault("dynamo", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros((1,) + shape), str(path), opset_version=opset,
                          input_names=["x"], output_names=["y"], **kw)
    return from_onnx(path)


def _exported(name, tmp_path_factory):
    """(torch model, example shape, imported graph), exported once per test session (opset 17, dynamic batch)."""
    if name not in _EXPORTED:
        model, shape = MODELS[name]()
        path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
        _EXPORTED[name] = (model.eval(), shape, _export(model, shape, path, dynamic_axes={"x": {0: "batch"}}))
    return _EXPORTED[name]


def _torch(model, x, dtype=torch.float32 if torch else None):
    with torch.no_grad():
        m = model.to(dtype)
        out = m(torch.as_tensor(np.asarray(x), dtype=dtype)).numpy()
        model.float()
    return out


def _center(shape, n=1):
    return RNG.uniform(0.2, 0.8, (n,) + shape).astype(np.float32)


def _ball(x0, eps, n):
    """n points of the l_inf ball around x0 `[1, ...]`: uniform ones and vertices."""
    u = RNG.uniform(-1, 1, (n,) + x0.shape[1:])
    u[: n // 2] = np.sign(u[: n // 2])
    return x0.astype(np.float64) + eps * u


# --------------------------------------------------------------------------------- torch -> ONNX -> robustjax
@needs_torch
@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_export_equals_torch(name, opset, tmp_path):
    model, shape = MODELS[name]()
    g = _export(model, shape, tmp_path / "m.onnx", opset=opset,
                **({"dynamic_axes": {"x": {0: "batch"}}} if name == "cnn" else {}))
    assert g.input_shape == shape                                   # the ONNX layout, NCHW, batch axis dropped
    x = _center(shape, 7)
    ref = _torch(model, x)
    np.testing.assert_allclose(np.asarray(evaluate(g, x)), ref, rtol=1e-5, atol=1e-5)
    # float64: equal up to the exporter's float32 rounding of the weights it folds (conv1 + bn1 in the CNN)
    np.testing.assert_allclose(evaluate_numpy(g, x), _torch(model, x, torch.float64), rtol=1e-7, atol=1e-7)
    kinds = [type(n.layer).__name__ for n in g.nodes]
    if name == "mlp":
        assert kinds[:2] == ["Affine", "Affine"], "the input normalization must stay inside the graph"
    if name == "cnn":
        assert kinds.count("Affine") == 1, "bn2 (after the max-pool) is a BatchNormalization node: one Affine"
    if name == "residual":
        assert "Add" in kinds


@needs_torch
def test_batchnorm_and_shape_arithmetic_without_constant_folding(tmp_path):
    """do_constant_folding=False keeps bn1 as a node and writes the flatten's target shape with Unsqueeze and
    Concat of constants."""
    model, shape = _cnn()
    g = _export(model, shape, tmp_path / "m.onnx", do_constant_folding=False, dynamic_axes={"x": {0: "batch"}})
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert {"BatchNormalization", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= ops
    x = _center(shape, 5)
    np.testing.assert_allclose(np.asarray(evaluate(g, x)), _torch(model, x), rtol=1e-5, atol=1e-5)
    assert [type(n.layer).__name__ for n in g.nodes].count("Affine") == 2


@needs_torch
def test_global_average_pool_from_adaptive_avg_pool(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    g = _export(model, (2, 6, 6), tmp_path / "m.onnx")
    assert "GlobalAveragePool" in {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    x = _center((2, 6, 6), 4)
    np.testing.assert_allclose(np.asarray(evaluate(g, x)), _torch(model, x), rtol=1e-5, atol=1e-5)


@needs_torch
@pytest.mark.parametrize("name,method", [("mlp", "ibp"), pytest.param("mlp", "crown", marks=pytest.mark.slow),
                                         ("cnn", "ibp"), ("cnn", "crown"), ("residual", "ibp"), ("residual", "crown")])
def test_bounds_hold_for_torch_outputs(name, method, tmp_path_factory):
    """IBP and CROWN output bounds (exact arithmetic) over the l_inf ball of radius 0.01 contain torch's outputs
    at uniform points and vertices of the ball: float64 up to 1e-7 (the exporter folds conv1 + bn1 of the CNN
    in float32), float32 up to 1e-5."""
    model, shape, g = _exported(name, tmp_path_factory)
    eps = 0.01
    x0 = _center(shape)
    pts = _ball(x0, eps, 256)
    y64, y32 = _torch(model, pts, torch.float64), _torch(model, pts.astype(np.float32))
    out = bounds.output_bounds(g, x0, eps=eps, method=method)
    lo, hi = np.asarray(out.lo)[0], np.asarray(out.hi)[0]
    assert np.all(y64 >= lo - 1e-7) and np.all(y64 <= hi + 1e-7)
    assert np.all(y32 >= lo - 1e-5) and np.all(y32 <= hi + 1e-5)
    assert np.all(hi - lo < 1.0) and np.all(hi - lo > 0)            # bounds, and not vacuous ones


@needs_torch
def test_certified_radius_and_margins_agree_with_torch(tmp_path_factory):
    model, shape, g = _exported("residual", tmp_path_factory)
    x = _center(shape, 3)
    label = _torch(model, x).argmax(1)
    res = bounds.certified_radius(g, x, label, method="crown", steps=8)
    assert np.all(res.radius >= 0) and np.any(res.radius > 0)
    for i in np.flatnonzero(res.radius > 0):
        pts = _ball(x[i:i + 1], float(res.radius[i]), 128).astype(np.float32)
        assert np.all(_torch(model, pts).argmax(1) == label[i])


@needs_torch
@pytest.mark.slow
def test_verify_property_on_a_tiny_box(tmp_path_factory):
    model, shape, g = _exported("residual", tmp_path_factory)
    x0 = _center(shape)
    label = int(_torch(model, x0).argmax())
    lo, hi = np.clip(x0 - 0.002, 0, 1)[0], np.clip(x0 + 0.002, 0, 1)[0]
    r = verify_property(g, (lo, hi), label, time_limit=60, method="crown")
    assert r.status in ("verified", "counterexample"), r
    if r.status == "counterexample":
        assert np.all(r.counterexample >= lo.reshape(-1) - 1e-9) and np.all(r.counterexample <= hi.reshape(-1) + 1e-9)
        assert int(_torch(model, r.counterexample.reshape((1,) + shape), torch.float64).argmax()) != label
    else:
        pts = _ball(x0, 0.002, 128)
        assert np.all(_torch(model, pts.astype(np.float32)).argmax(1) == label)


@needs_torch
def test_dynamo_exporter(tmp_path):
    """The dynamo exporter (torch's default since 2.9, needs onnxscript) writes softplus as
    Where(Greater(x, 20), x, Softplus(x)) and the flatten as a Reshape."""
    pytest.importorskip("onnxscript")
    for name in sorted(MODELS):
        model, shape = MODELS[name]()
        g = _export(model, shape, tmp_path / f"{name}.onnx", opset=18, dynamo=True)
        x = _center(shape, 1)                    # the dynamo export fixes the batch axis at 1
        np.testing.assert_allclose(np.asarray(evaluate(g, x)), _torch(model, x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ the operators torch writes, via onnx.helper
def _model(nodes, inits, in_shape, out_dim, opset=13, batch="N"):
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch] + list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, out_dim])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _compare(model, in_shape, x=None, n=3):
    g = from_onnx(model)
    x = RNG.uniform(0, 1, (n,) + tuple(in_shape)).astype(np.float32) if x is None else x
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]     # the whole batch at once
    np.testing.assert_allclose(np.asarray(evaluate(g, x)), ref, rtol=1e-5, atol=1e-5)
    return g


@pytest.mark.parametrize("opset", [11, 13])
def test_dynamic_batch_flatten_shape_gather_unsqueeze_concat(opset):
    """x.view(x.size(0), -1) for a dynamic batch axis; Unsqueeze of a graph tensor (axes an attribute before
    opset 13, an input since); Constant value_ints (opset >= 12)."""
    unsq = (lambda i, o, axes: helper.make_node("Unsqueeze", [i], [o], axes=axes)) if opset < 13 else \
        (lambda i, o, axes: helper.make_node("Unsqueeze", [i, o + "_axes"], [o]))
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             unsq("n", "n1", [0]),
             helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64)))
             if opset < 13 else helper.make_node("Constant", [], ["minus1"], value_ints=[-1]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             unsq("flat", "u", [2]),
             helper.make_node("Flatten", ["u"], ["f2"], axis=1),
             helper.make_node("Gemm", ["f2", "W", "b"], ["y"], transB=1)]
    inits = {"W": RNG.normal(size=(3, 12)).astype(np.float32), "b": RNG.normal(size=3).astype(np.float32)}
    if opset >= 13:
        inits.update({"n1_axes": np.array([0], np.int64), "u_axes": np.array([2], np.int64)})
    g = _compare(_model(nodes, inits, (3, 2, 2), 3, opset), (3, 2, 2), n=4)
    assert [type(n.layer).__name__ for n in g.nodes] == ["Reshape", "Reshape", "Flatten", "Dense"]


def test_batch_size_only_as_the_first_entry_of_a_reshape():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Concat", ["minus1", "s"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    m = _model(nodes, {"minus1": np.array([-1], np.int64)}, (4,), 4)
    with pytest.raises(ValueError, match="batch size enters the target shape"):
        from_onnx(m)
    nodes = [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)]
    with pytest.raises(ValueError, match=r"Gather.*only constant operands"):
        from_onnx(_model(nodes, {"i": np.array([0, 1], np.int64)}, (4,), 2))


def _softplus_model(threshold, true_branch="a"):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["a"], transB=1),
             helper.make_node("Softplus", ["a"], ["sp"]),
             helper.make_node("Greater", ["a", "t"], ["c"]),
             helper.make_node("Where", ["c", true_branch, "sp"], ["z"]),
             helper.make_node("Gemm", ["z", "W2"], ["y"], transB=1)]
    inits = {"W": (10 * RNG.normal(size=(5, 4))).astype(np.float32), "b": np.zeros(5, np.float32),
             "t": np.array(threshold, np.float32), "W2": RNG.normal(size=(2, 5)).astype(np.float32)}
    return _model(nodes, inits, (4,), 2, opset=17)


def test_thresholded_softplus_from_the_dynamo_exporter():
    x = RNG.uniform(-3, 3, (16, 4)).astype(np.float32)           # pre-activations well past the threshold too
    g = _compare(_softplus_model(20.0), (4,), x=x)
    assert [n.layer.kind for n in g.nodes if type(n.layer).__name__ == "Activation"] == ["softplus"]
    with pytest.raises(ValueError, match="threshold 5.0 < 16"):
        from_onnx(_softplus_model(5.0))
    with pytest.raises(ValueError, match=r"Where.*thresholded softplus"):
        from_onnx(_softplus_model(20.0, true_branch="sp"))


def test_global_average_pool():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)]
    _compare(_model(nodes, {"W": RNG.normal(size=(2, 3)).astype(np.float32)}, (3, 4, 5), 2), (3, 4, 5))
