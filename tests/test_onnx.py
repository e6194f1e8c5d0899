"""ONNX import: graphs written with onnx.helper and the competition's networks equal onnxruntime on random
inputs; unsupported operators are named with their node."""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from robustjax.network import evaluate, evaluate_numpy  # noqa: E402
from robustjax.network.from_onnx import from_onnx  # noqa: E402

ERAN = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021_eran" / "nets"
RNG = np.random.default_rng(0)


def _init(name, shape, scale=0.3):
    return numpy_helper.from_array((scale * RNG.normal(size=shape)).astype(np.float32), name)


def _model(nodes, inits, in_shape, out_dim):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] + list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_dim])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _compare(model, in_shape, n=6, tol=1e-5):
    g = from_onnx(model)
    assert g.input_shape == tuple(in_shape)
    sess = ort.InferenceSession(model.SerializeToString())
    x = RNG.uniform(0, 1, (n,) + tuple(in_shape)).astype(np.float32)
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(n)])
    np.testing.assert_allclose(evaluate_numpy(g, x), ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(evaluate(g, x)), ref, rtol=tol, atol=tol)
    return g


def test_mlp_with_normalization_gemm_matmul_and_smooth_activations():
    nodes = [
        helper.make_node("Constant", [], ["mu"], value=numpy_helper.from_array(np.array(0.13, np.float32))),
        helper.make_node("Sub", ["x", "mu"], ["a"]),
        helper.make_node("Div", ["a", "sd"], ["b"]),
        helper.make_node("Flatten", ["b"], ["c"], axis=1),
        helper.make_node("Gemm", ["c", "W1", "b1"], ["d"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Tanh", ["d"], ["e"]),
        helper.make_node("MatMul", ["e", "W2"], ["f"]),
        helper.make_node("Add", ["f", "b2"], ["g"]),
        helper.make_node("Sigmoid", ["g"], ["h"]),
        helper.make_node("Mul", ["h", "s"], ["i"]),
        helper.make_node("Softplus", ["i"], ["j"]),
        helper.make_node("Relu", ["j"], ["k"]),
        helper.make_node("Gemm", ["k", "W3", "b3"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.31, np.float32), "sd"), _init("W1", (16, 12)), _init("b1", (16,)),
             _init("W2", (16, 8)), _init("b2", (8,)), _init("s", (8,)), _init("W3", (8, 4)), _init("b3", (4,))]
    _compare(_model(nodes, inits, (3, 2, 2), 4), (3, 2, 2))


def test_cnn_with_batchnorm_pooling_residual_add_reshape_transpose():
    C = 3
    nodes = [
        helper.make_node("Conv", ["x", "K1", "c1"], ["a"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["a", "g", "be", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("Conv", ["r1", "K2"], ["a2"], pads=[1, 1, 1, 1], group=C),
        helper.make_node("Add", ["a2", "r1"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Transpose", ["ap"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["fl"]),
        helper.make_node("Dropout", ["fl"], ["dr"]),
        helper.make_node("Gemm", ["dr", "W", "b"], ["y"], transB=1),
    ]
    inits = [_init("K1", (C, 1, 3, 3)), _init("c1", (C,)), numpy_helper.from_array(RNG.uniform(0.5, 1.5, C).astype(np.float32), "g"),
             _init("be", (C,)), _init("m", (C,)), numpy_helper.from_array(RNG.uniform(0.5, 2.0, C).astype(np.float32), "v"),
             _init("K2", (C, 1, 3, 3)), numpy_helper.from_array(np.array([-1, 12], np.int64), "shape"),
             _init("W", (5, 12)), _init("b", (5,))]
    g = _compare(_model(nodes, inits, (1, 6, 6), 5), (1, 6, 6))
    kinds = {type(n.layer).__name__ for n in g.nodes}
    assert {"Conv", "Affine", "ReLU", "Add", "MaxPool", "Transpose", "Reshape", "Dense"} <= kinds


@pytest.mark.skipif(not ERAN.is_dir(), reason="competition networks not present")
@pytest.mark.parametrize("name", ["mnist_relu_9_200.onnx", "ffnnSIGMOID__Point_6x200.onnx"])
def test_competition_networks_equal_onnxruntime(name):
    path = ERAN / name
    g = from_onnx(path)
    kinds = [type(n.layer).__name__ for n in g.nodes]
    assert kinds[:2] == ["Affine", "Affine"], "the input normalization must stay inside the graph"
    sess = ort.InferenceSession(str(path))
    x = RNG.uniform(0, 1, (4,) + g.input_shape).astype(np.float32)
    inp = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {inp: x[i:i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(evaluate_numpy(g, x), ref, rtol=1e-4, atol=1e-4)


def test_unsupported_operator_names_the_node():
    nodes = [helper.make_node("Flatten", ["x"], ["a"]), helper.make_node("Gemm", ["a", "W", "b"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"], name="final_softmax")]
    m = _model(nodes, [_init("W", (3, 4)), _init("b", (3,))], (4,), 3)
    with pytest.raises(ValueError, match="final_softmax.*Softmax.*not supported"):
        from_onnx(m)
    with pytest.raises(ValueError, match="cannot read ONNX model"):
        from_onnx("/nonexistent/model.onnx")
    with pytest.raises(ValueError, match="model must be a path or an onnx.ModelProto, got int"):
        from_onnx(123)
    bad = [helper.make_node("Flatten", ["x"], ["a"]), helper.make_node("Gemm", ["a", "W", "nope"], ["y"], name="mm")]
    unchecked = helper.make_model(helper.make_graph(
        bad, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [_init("W", (4, 3))]))   # unchecked
    with pytest.raises(ValueError, match=r"node mm \(Gemm\): 'nope' is not defined"):
        from_onnx(unchecked)
    bad = [helper.make_node("Flatten", ["x"], ["a"]), helper.make_node("MatMul", ["a", "W"], ["y"], name="mm")]
    with pytest.raises(ValueError, match=r"node mm \(MatMul\): TypeError"):
        from_onnx(_model(bad, [_init("W", (5, 3))], (4,), 3))


def test_leaky_relu_clip_and_uncounted_padding_as_piecewise_affine_layers():
    """LeakyRelu, Clip (one- and two-sided, bounds as inputs) and AveragePool with padding left out of the
    count equal onnxruntime; the graph stays piecewise affine, and CROWN's bounds contain sampled outputs."""
    from robustjax import bounds
    nodes = [
        helper.make_node("Conv", ["x", "K1", "c1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["a"], ["l"], alpha=0.1),
        helper.make_node("AveragePool", ["l"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=0),
        helper.make_node("Clip", ["ap", "lo", "hi"], ["c"]),
        helper.make_node("Clip", ["c", "lo2"], ["c2"]),
        helper.make_node("Clip", ["c2", "", "hi2"], ["c3"]),
        helper.make_node("Flatten", ["c3"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1),
    ]
    scalar = lambda v, n: numpy_helper.from_array(np.array(v, np.float32), n)  # noqa: E731
    inits = [_init("K1", (2, 1, 3, 3), 1.0), _init("c1", (2,)), scalar(-0.2, "lo"), scalar(0.3, "hi"),
             scalar(-0.1, "lo2"), scalar(0.25, "hi2"), _init("W", (3, 18)), _init("b", (3,))]
    g = _compare(_model(nodes, inits, (1, 6, 6), 3), (1, 6, 6))
    assert g.is_piecewise_affine()
    x = RNG.uniform(0, 1, (1, 1, 6, 6)).astype(np.float32)
    iv = bounds.output_bounds(g, x, eps=0.05, p=np.inf)
    pts = np.clip(x + RNG.uniform(-0.05, 0.05, (200, 1, 6, 6)), 0, 1)      # in the ball and in any box [0, 1]
    out = evaluate_numpy(g, pts)
    assert np.all(out >= np.asarray(iv.lo) - 1e-9) and np.all(out <= np.asarray(iv.hi) + 1e-9)


def test_clip_attribute_form_and_bad_bounds():
    def clip_model(opset, **kw):
        nodes = [helper.make_node("Clip", ["x"], ["c"], **kw), helper.make_node("Gemm", ["c", "W", "b"], ["y"], transB=1)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                                  [_init("W", (2, 4)), _init("b", (2,))])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 7
        return m
    _compare(clip_model(10, min=0.2, max=0.7), (4,))
    with pytest.raises(ValueError, match=r"Clip.*min 0.69.* > max 0.2"):
        from_onnx(clip_model(10, min=0.7, max=0.2))
