"""Small random ReLU networks as robustjax.verify layers, shared by the region-attack and MILP tests."""
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


def assert_same_tree(a, b):
    """Every leaf of two pytrees bit-equal (exact resume checks)."""
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
