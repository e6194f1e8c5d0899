"""Networks as small typed graphs of layers: traced from any jittable logits_fn (`trace`) or read from ONNX
(`from_onnx`), evaluated in JAX or float64 numpy by one traversal over handler tables (`interpret`,
`evaluate`), made functions whose weights are jit arguments (`split`, `join`, `as_function`: one compilation
per architecture), and read for their linear regions (`region`: switch pattern, affine map and halfspaces of
the region of a point)."""
from robustjax.network.graph import (ACTIVATIONS, AFFINE_KINDS, PIECEWISE_KINDS, Activation, Add, Affine,
                                     Concatenate, Conv, Dense, Flatten, Graph, Layer, MaxPool, Node, ReLU, Reshape,
                                     Transpose, as_graph, linear_part)
from robustjax.network.evaluate import JAX, NUMPY, evaluate, evaluate_numpy, interpret, pool_windows
from robustjax.network.trace import trace
from robustjax.network.from_onnx import from_onnx
from robustjax.network.function import Structure, as_function, floating_as, join, split
from robustjax.network.region import RegionMap, pattern, region_map, switches

__all__ = ["ACTIVATIONS", "AFFINE_KINDS", "PIECEWISE_KINDS", "Activation", "Add", "Affine", "Concatenate", "Conv",
           "Dense", "Flatten", "Graph", "Layer", "MaxPool", "Node", "ReLU", "Reshape", "Transpose", "as_graph",
           "linear_part"]
__all__ += ["JAX", "NUMPY", "evaluate", "evaluate_numpy", "from_onnx", "interpret", "pool_windows", "trace"]
__all__ += ["RegionMap", "pattern", "region_map", "switches"]
__all__ += ["Structure", "as_function", "join", "split"]
