"""robustjax.network: the traced graph equals the model it was read from (MLP, CNN with max-pool, a residual
net, smooth activations), in JAX and in float64 numpy; the affine map of a linear region reproduces the
network exactly on that region and not outside it; unsupported models fail with a clear error."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models, network


def residual_net(key):
    """conv -> relu -> (conv -> relu) + skip -> max-pool -> flatten -> dense -> relu -> dense, NHWC 6x6x1."""
    k = jax.random.split(key, 6)
    w1 = 0.5 * jax.random.normal(k[0], (3, 3, 1, 4))
    w2 = 0.3 * jax.random.normal(k[1], (3, 3, 4, 4))
    b1, b2 = 0.1 * jax.random.normal(k[2], (4,)), 0.1 * jax.random.normal(k[3], (4,))
    w3, w4 = 0.3 * jax.random.normal(k[4], (36, 8)), 0.3 * jax.random.normal(k[5], (8, 3))
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn) + b1)
        h = jax.nn.relu(jax.lax.conv_general_dilated(h, w2, (1, 1), "SAME", dimension_numbers=dn) + b2) + h
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ w3)
        return (2.0 * h - 0.5) @ w4
    return f, (6, 6, 1)


def mlp(act="relu"):
    m = models.build("mlp", widths=(7, 5), act=act, num_classes=3)
    return models.logits_fn(m, models.init(m, jax.random.key(0), (1, 4))), (4,)


def lenet():
    m = models.build("lenet", features=(3, 4), hidden=12)
    return models.logits_fn(m, models.init(m, jax.random.key(0), (1, 8, 8, 1))), (8, 8, 1)


NETS = {"mlp": mlp, "lenet": lenet, "residual": lambda: residual_net(jax.random.key(3)),
        "tanh": lambda: mlp("tanh"), "softplus": lambda: mlp("softplus")}


@pytest.mark.parametrize("name", sorted(NETS))
def test_traced_graph_equals_the_model(name):
    f, shape = NETS[name]()
    g = network.trace(f, shape)
    x = jax.random.uniform(jax.random.key(1), (6,) + shape)
    ref = np.asarray(f(x), np.float64)
    np.testing.assert_allclose(np.asarray(network.evaluate(g, x)), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(network.evaluate_numpy(g, x), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda z: network.evaluate(g, z))(x)), ref, rtol=1e-5, atol=1e-6)


def test_graph_structure():
    """Biases are folded into their Dense / Conv; the residual add reads two nodes; smooth activations
    keep their name."""
    g = network.trace(mlp()[0], (4,))
    assert [type(l).__name__ for l in g.layers] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    assert g.is_chain() and g.is_piecewise_affine()
    r = network.trace(*residual_net(jax.random.key(3)))
    adds = [n for n in r.nodes if isinstance(n.layer, network.Add)]
    assert len(adds) == 1 and len(set(adds[0].inputs)) == 2 and not r.is_chain()
    assert sum(isinstance(l, network.MaxPool) for l in r.layers) == 1
    t = network.trace(mlp("tanh")[0], (4,))
    assert [l.kind for l in t.layers if isinstance(l, network.Activation)] == ["tanh", "tanh"]
    assert not t.is_piecewise_affine()


def test_unsupported_models_name_the_primitive():
    with pytest.raises(ValueError, match="'sin'"):
        network.trace(lambda x: jnp.sin(x) @ jnp.ones((4, 2)), (4,))
    with pytest.raises(ValueError, match="'mul'"):
        network.trace(lambda x: (x * x) @ jnp.ones((4, 2)), (4,))
    with pytest.raises(ValueError, match="'reduce_sum'"):
        network.trace(lambda x: jnp.sum(x, 1, keepdims=True) @ jnp.ones((1, 2)), (4,))
    with pytest.raises(ValueError, match="batch axis"):
        network.trace(lambda x: x.reshape(1, -1) @ jnp.ones((4 * x.shape[0], 2)), (4,))
    with pytest.raises(ValueError, match="no handler for layer MaxPool"):
        network.interpret(network.Graph((network.Node(network.MaxPool((2,), (2,), ((0, 0),)), (0,)),)),
                          {network.Dense: lambda l, x: x}, jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match="Graph or a sequence"):
        network.as_graph("mlp")


def test_trace_never_changes_the_function():
    """A cast that rounds (to int32 or float16) is refused, not dropped; a call named like an activation is
    taken for it only when its body computes it (elu with alpha 2 is refused, a jitted 'relu' computing 2 x is
    read from its body), and the traced graph equals the function."""
    rng = np.random.default_rng(0)
    W, W2 = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 4), (4, 3)))
    for dtype in (jnp.int32, jnp.float16):
        with pytest.raises(ValueError, match=f"a cast from float32 to {jnp.dtype(dtype).name}, which rounds"):
            network.trace(lambda z, dtype=dtype: (z @ W * 3).astype(dtype).astype(jnp.float32), (6,))
    with pytest.raises(ValueError, match="'gt'"):
        network.trace(lambda z: jax.nn.elu(z @ W - 1.0, alpha=2.0) @ W2, (6,))

    @jax.jit
    def relu(z):
        return 2.0 * z
    x = jnp.asarray(rng.uniform(size=(5, 6)), jnp.float32)
    for f, kinds in ((lambda z: relu(z @ W) @ W2, ["Dense", "Affine", "Dense"]),
                     (lambda z: jax.nn.elu(z @ W - 1.0) @ W2, ["Dense", "Activation", "Dense"]),
                     (lambda z: jax.nn.relu(z @ W).astype(jnp.float32) @ W2, ["Dense", "ReLU", "Dense"])):
        g = network.trace(f, (6,))
        assert [type(n.layer).__name__ for n in g.nodes] == kinds
        np.testing.assert_allclose(network.evaluate(g, x), f(x), rtol=1e-5, atol=1e-5)


def _same_region(g, z, pat):
    q = network.pattern(g, z[None])[0]
    return np.array_equal(q[pat != 0], pat[pat != 0])


@pytest.mark.parametrize("name", ["mlp", "lenet", "residual"])
def test_region_map_is_exact_on_its_region(name):
    """In float64: at points with the pattern of z the logits and switches equal the region's affine maps
    (to 1e-9); points with another pattern are found, and the map is wrong there (it is a region's map, not
    the network's)."""
    f, shape = NETS[name]()
    g = network.trace(f, shape)
    z = np.asarray(jax.random.uniform(jax.random.key(2), shape), np.float64)
    r = network.region_map(g, z)
    pat = network.pattern(g, z[None])[0]
    np.testing.assert_array_equal(np.sign(r.sign), pat)
    rng = np.random.default_rng(0)
    inside = outside = 0
    for scale in (1e-6, 1e-4, 1e-2, 0.3, 1.0):
        for _ in range(6):
            zz = z + scale * rng.normal(size=z.shape)
            out = network.evaluate_numpy(g, zz[None])[0]
            lin = zz.reshape(-1) @ r.F + r.f0
            if _same_region(g, zz, pat):
                np.testing.assert_allclose(lin, out, rtol=1e-9, atol=1e-9)
                sw = network.switches(g, jnp.asarray(zz[None], jnp.float32))[1][0]
                np.testing.assert_allclose(zz.reshape(-1) @ r.S + r.s0, sw, rtol=1e-4, atol=1e-4)
                G, h = r.halfspaces()
                assert np.all(G @ zz.reshape(-1) >= h - 1e-9)
                inside += 1
            elif np.max(np.abs(lin - out)) > 1e-6:
                outside += 1
    assert inside >= 10 and outside >= 3


def test_region_map_rejects_smooth_nets():
    f, shape = mlp("softplus")
    with pytest.raises(ValueError, match="not piecewise affine"):
        network.region_map(network.trace(f, shape), np.zeros(shape))


def test_switches_signs_match_the_float64_pattern():
    f, shape = lenet()
    g = network.trace(f, shape)
    x = jax.random.uniform(jax.random.key(5), (3,) + shape)
    _, sw = network.switches(g, x)
    pat = network.pattern(g, np.asarray(x, np.float64))
    clear = np.abs(np.asarray(sw)) > 1e-5
    np.testing.assert_array_equal(np.sign(np.asarray(sw))[clear], pat[clear])
    n_relu, n_pool = 8 * 8 * 3 + 4 * 4 * 4 + 12, 4 * 4 * 3 * 4 + 2 * 2 * 4 * 4
    assert sw.shape == (3, n_relu + n_pool)



def _dense_net(seed, widths, d=6):
    rng = np.random.default_rng(seed)
    layers = [network.Flatten()]
    for i, w in enumerate(widths):
        layers += ([network.ReLU()] if i else []) + [network.Dense(rng.normal(size=(d, w)), rng.normal(size=w))]
        d = w
    return network.as_graph(layers)


def test_split_join_round_trip_and_structures_compare_by_architecture():
    """split / join round-trip a traced residual CNN exactly and as_function equals evaluate; a second net of
    the same architecture has an equal (and equally hashed) structure, other strides do not; other widths
    change only the arrays' shapes (which jit keys on as argument shapes)."""
    f, shape = residual_net(jax.random.key(0))
    graph = network.trace(f, shape)
    structure, arrays = network.split(graph)
    assert all(isinstance(a, (np.ndarray, jax.Array)) for a in arrays) and len(arrays) >= 6
    x = jax.random.uniform(jax.random.key(1), (3,) + shape)
    ref = np.asarray(network.evaluate(graph, x))
    np.testing.assert_array_equal(np.asarray(network.evaluate(network.join(structure, arrays), x)), ref)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda h, z: h(z))(network.as_function(graph), x)), ref)
    twin = network.split(network.trace(residual_net(jax.random.key(5))[0], shape))[0]
    assert twin == structure and hash(twin) == hash(structure)
    strided = graph._replace(nodes=tuple(n._replace(layer=n.layer._replace(window_strides=(2, 2)))
                                         if isinstance(n.layer, network.Conv) else n for n in graph.nodes))
    assert network.split(strided)[0] != structure
    (s8, a8), (s9, a9) = network.split(_dense_net(0, [8, 3])), network.split(_dense_net(0, [9, 3]))
    assert s8 == s9 and [a.shape for a in a8] != [a.shape for a in a9]


def test_attacks_compile_once_per_architecture_for_a_partial():
    """deepfool on three nets of one architecture as `as_function` Partials: one program, the same distances
    as a closure over each net (which compiles anew each time); the region attack's round program likewise."""
    import importlib
    deepfool_module = importlib.import_module("robustjax.attacks.deepfool")   # the package exports the function
    from robustjax.attacks.region_oracle import _round, make_oracle

    x = np.random.default_rng(0).uniform(size=(4, 6)).astype(np.float32)
    core = deepfool_module._deepfool.jitted
    n0 = core._cache_size()
    for seed in range(3):
        graph = _dense_net(seed, [8, 3])
        fn = network.as_function(graph)
        labels = np.asarray(jnp.argmax(fn(x), -1))
        r = deepfool_module.deepfool(fn, x, labels, p=2)
        ref = deepfool_module.deepfool(lambda z, g=graph: network.evaluate(g, z), x, labels, p=2)
        np.testing.assert_allclose(r.distance, ref.distance, rtol=1e-5)
    assert core._cache_size() == n0 + 1 + 3
    r0 = _round._cache_size()
    z = jnp.full(6, 0.5, jnp.float32)
    for seed in range(3):
        o = make_oracle(network.as_function(_dense_net(seed, [8, 3])), None, (6,), jnp.dtype(jnp.float32))
        o.round(jax.random.key(0), z, z, 0, jnp.zeros(6), jnp.ones(6), 6.0, True, jnp.zeros((4, 6)), 0, p=2.0, R=4)
    assert _round._cache_size() == r0 + 1
