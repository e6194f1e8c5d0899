"""Shared test helpers: small random ReLU networks as robustjax.verify layers (region-attack and MILP tests),
random polyhedra in the unit box (the qp and lp tests), exact pytree equality, benchmark scripts as modules (their
small versions run as tests)."""
import jax
import numpy as np

from robustjax import verify


def random_net(seed, sizes, bias=0.5):
    """Dense layers of widths `sizes` (input first) with ReLUs between, N(0, 1/fan_in) weights."""
    rng = np.random.default_rng(seed)
    layers = [verify.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(verify.ReLU())
        layers.append(verify.Dense(rng.normal(size=(a, b)) / np.sqrt(a), bias * rng.normal(size=b)))
    return layers


def polyhedron_problem(rng, d, m, kind):
    """(x `[d]`, G `[m, d]` unit rows, h `[m]`) for min ||z - x|| s.t. G z >= h in [0, 1]^d: kind "feasible"
    (rows up to 1 below a point of the box), "tight" (up to 1e-4 below it) or "infeasible" (up to 20 above)."""
    x = rng.uniform(size=d)
    x[rng.uniform(size=d) < 0.5] = 0.0                      # MNIST-like: many coordinates on the box face
    G = rng.normal(size=(m, d))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    y = rng.uniform(size=d)
    gap = {"feasible": -rng.uniform(0, 1, m), "tight": -rng.uniform(0, 1e-4, m), "infeasible": rng.uniform(0, 20, m)}
    return x, G, G @ y + gap[kind]


def assert_same_tree(a, b):
    """Every leaf of two pytrees bit-equal (exact resume checks)."""
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
