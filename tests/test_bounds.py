"""Bound propagation tried hard: sampled and attacked outputs inside the bounds (float64 re-check) on random
nets of depth 1-6 with ReLU and smooth activations, CROWN never looser than IBP, alpha-CROWN never looser than
CROWN, certified radii below the exact MILP distance, and radius 0 where float32 rounding could flip the class."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import bounds, verify
from robustjax.network import Activation, Dense, Flatten, ReLU, as_function, as_graph, evaluate_numpy, trace

from _nets import load_benchmark  # noqa: E402  (tests/ is on sys.path under pytest)

P_EPS = {np.inf: 0.04, 2.0: 0.3, 1.0: 0.8}


def _net(rng, d, widths, K, act):
    layers, n = [Flatten()], d
    for w in widths:
        layers += [Dense(rng.normal(size=(n, w)) / np.sqrt(n), 0.3 * rng.normal(size=w)),
                   ReLU() if act == "relu" else Activation(act)]
        n = w
    layers.append(Dense(rng.normal(size=(n, K)) / np.sqrt(n), 0.3 * rng.normal(size=K)))
    return as_graph(layers, (d,))


_BENCH = load_benchmark("bench_bounds_soundness")
_ball_points, _into_set = _BENCH.random_points, _BENCH.into_set


def _attack_extremes(graph, x, eps, p):
    """Per logit, the ends of a projected ascent and descent from x `[D]` inside the set, float64."""
    return _BENCH.ascent_ends(as_function(graph), x, eps, p)


CASES = [("relu", 1, np.inf, bounds.METHODS), ("relu", 5, 2.0, ("ibp", "crown")), ("relu", 3, 1.0, ("crown",)),
         ("sigmoid", 3, np.inf, ("ibp", "crown")), ("tanh", 2, 2.0, ("crown",)), ("softplus", 2, 1.0, ("ibp", "crown"))]


@pytest.mark.parametrize("act, depth, p, methods", CASES)
def test_sampled_and_attacked_outputs_lie_inside_the_bounds(act, depth, p, methods):
    rng = np.random.default_rng(depth + 10 * ["relu", "sigmoid", "tanh", "softplus"].index(act))
    g = _net(rng, 8, (12,) * depth, 4, act)
    x = rng.uniform(0.1, 0.9, (3, 8)).astype(np.float32)
    eps = P_EPS[p]
    res = {m: bounds.output_bounds(g, x, eps=eps, p=p, method=m, alpha_steps=5) for m in methods}
    for i in range(len(x)):
        pts = np.concatenate([_ball_points(rng, x[i].astype(np.float64), eps, p, 400),
                              _attack_extremes(g, x[i].astype(np.float64), eps, p)])
        pts = _into_set(pts, x[i].astype(np.float64), eps, p)
        y = evaluate_numpy(g, pts)
        for m, b in res.items():
            assert np.all(y >= b.lo[i]) and np.all(y <= b.hi[i]), (act, depth, p, m)
    pairs = [("ibp", "crown-ibp"), ("ibp", "crown"), ("crown", "alpha-crown")]
    for loose, tight in [(a, b) for a, b in pairs if a in res and b in res]:
        assert np.all(res[tight].lo >= res[loose].lo - 1e-12) and np.all(res[tight].hi <= res[loose].hi + 1e-12)


def test_margin_bounds_crown_dominates_ibp_and_alpha_dominates_crown():
    rng = np.random.default_rng(5)
    g = _net(rng, 10, (20, 20), 5, "relu")
    x = rng.uniform(0.2, 0.8, (6, 10)).astype(np.float32)
    y = bounds.predict_float64(g, x)
    m = {meth: bounds.margin_bounds(g, x, y, eps=0.03, method=meth, alpha_steps=30) for meth in bounds.METHODS}
    off = ~np.eye(5, dtype=bool)[y]
    assert np.all(m["crown"][off] >= m["ibp"][off] - 1e-12)
    assert np.all(m["alpha-crown"][off] >= m["crown"][off] - 1e-12)
    assert np.any(m["alpha-crown"][off] > m["crown"][off] + 1e-6), "alpha-CROWN should improve somewhere"



@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_optimized_intermediate_bounds_hold_and_never_loosen(act):
    """alpha-CROWN's optimized intermediate bounds (every row's own slopes) contain every sampled and attacked
    point's activations at every node and lie inside CROWN's."""
    from robustjax.bounds import crown, propagate
    rng = np.random.default_rng(11)
    g = _net(rng, 6, (12, 12, 12), 3, act)
    x = rng.uniform(0.3, 0.7, 6)
    eps = 0.15
    pts = _into_set(np.concatenate([_ball_points(rng, x, eps, np.inf, 4000), _attack_extremes(g, x, eps, np.inf)]),
                    x, eps, np.inf)
    with jax.enable_x64(True):
        s = propagate.input_set(x[None], eps, np.inf, None)
        shapes = crown.node_shapes(g, g.input_shape)
        plain, _, _ = crown.intermediate_bounds(g, s, shapes, method="crown")
        opt, _, _ = crown.intermediate_bounds(g, s, shapes, method="crown", alpha_steps=15)
    h, tighter = pts, 0.0
    for k, node in enumerate(g.nodes, 1):
        h = evaluate_numpy(as_graph([node.layer], h.shape[1:]), h)
        lo, hi = np.asarray(opt[k].lo[0]), np.asarray(opt[k].hi[0])
        assert np.all(h >= lo - 1e-9) and np.all(h <= hi + 1e-9), k
        assert np.all(lo >= np.asarray(plain[k].lo[0]) - 1e-12) and np.all(hi <= np.asarray(plain[k].hi[0]) + 1e-12)
        tighter += float(np.sum(np.asarray(plain[k].hi - plain[k].lo) - (hi - lo)))
    assert tighter > 0, "the optimization tightened nothing: the test lost its point"

@pytest.mark.parametrize("p", [np.inf, 1.0])
def test_certified_radius_never_exceeds_the_exact_milp_distance(p):
    rng = np.random.default_rng(11 if p == np.inf else 12)
    g = _net(rng, 6, (10, 10), 3, "relu")
    layers = list(g.layers)
    x = rng.uniform(0.2, 0.8, (4, 6)).astype(np.float32)
    y = bounds.predict_float64(g, x)
    for method in ("crown", "alpha-crown"):
        cert = bounds.certified_radius(g, x, y, p=p, method=method, steps=14, alpha_steps=10)
        for i in range(len(x)):
            exact = verify.min_adversarial_milp(layers, x[i].astype(np.float64), int(y[i]), p=p, time_limit=30)
            assert exact.upper_bound < np.inf
            # radius <= true minimum <= the distance of the MILP's (feasible, re-verified) adversarial point
            assert cert.radius[i] <= exact.upper_bound, (method, i, cert.radius[i], exact)
        if method == "crown":
            crown_r = cert.radius
        if method == "alpha-crown":
            assert np.all(cert.radius >= crown_r * (1 - 2 ** -12) - 1e-9)


def _point_at_margin(g, xa, xb, c, target):
    """The point of the segment [xa, xb] (float64 bisection) where f_c - max_{j != c} f_j = target."""
    def margin(t):
        out = evaluate_numpy(g, (xa + t * (xb - xa))[None])[0]
        return out[c] - np.max(np.delete(out, c))
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if margin(mid) > target else (lo, mid)
    return xa + lo * (xb - xa), margin(lo)


def test_radius_zero_and_flag_where_float32_rounding_could_flip_the_class():
    rng = np.random.default_rng(3)
    g = _net(rng, 8, (64,), 3, "relu")
    pool = rng.uniform(0.1, 0.9, (400, 8))
    pred = bounds.predict_float64(g, pool)
    xa = pool[0]
    xb = pool[np.flatnonzero(pred != pred[0])[0]]
    targets = [1e-1, 1e-2, 1e-4, 1e-6, 1e-8, 1e-10]
    pts = np.stack([_point_at_margin(g, xa, xb, int(pred[0]), t)[0] for t in targets])
    y = np.full(len(targets), pred[0])
    r32 = bounds.certified_radius(g, pts, y, p=2, method="crown")
    r64 = bounds.certified_radius(g, pts, y, p=2, method="crown", dtype=None)
    assert np.all(r32.radius <= r64.radius)
    assert r32.radius[0] > 0 and r64.radius[-2] > 0          # exact arithmetic still certifies 1e-8
    assert np.all(r32.radius[-2:] == 0) and np.all(r32.uncertain[-2:])   # below float32's resolution
    assert not np.any(r32.uncertain[:2])


def test_traced_cnn_with_pooling_and_residual_add_is_bounded_soundly():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(4, (3, 3))(x))
            h = h + nn.relu(nn.Conv(4, (3, 3))(h))
            h = nn.max_pool(h, (2, 2), (2, 2))
            return nn.Dense(3)(h.reshape(h.shape[0], -1))
    model = Net()
    v = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    f = lambda x: model.apply(v, x)  # noqa: E731
    g = trace(f, (6, 6, 1))
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (2, 6, 6, 1)).astype(np.float32)
    for p, eps in ((np.inf, 0.05), (2.0, 0.2)):
        for m in ("ibp", "crown") if p == np.inf else ("crown",):
            b = bounds.output_bounds(f, x, eps=eps, p=p, method=m)
            for i in range(2):
                pts = _ball_points(rng, x[i].astype(np.float64), eps, p, 300)
                pts = _into_set(pts, x[i].astype(np.float64), eps, p)
                out = evaluate_numpy(g, pts)
                assert np.all(out >= b.lo[i]) and np.all(out <= b.hi[i]), (p, m)


def test_crown_through_relu_then_max_pool_in_several_chunks():
    """conv -> ReLU -> max-pool -> dense (LeNet's order: the ReLU's output feeds another nonlinear node) with
    1,152 ReLUs, more than one chunk of intermediate backward passes (the last one wrapping around): CROWN
    bounds contain sampled outputs and lie inside IBP's."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.max_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), (2, 2))
            return nn.Dense(3)(nn.relu(nn.Dense(16)(h.reshape(h.shape[0], -1))))
    model = Net()
    v = model.init(jax.random.key(1), jnp.zeros((1, 12, 12, 1)))
    f = lambda x: model.apply(v, x)  # noqa: E731
    g = trace(f, (12, 12, 1))
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, (2, 12, 12, 1)).astype(np.float32)
    eps = 0.02
    ib = bounds.output_bounds(f, x, eps=eps, method="ibp")
    cb = bounds.output_bounds(f, x, eps=eps, method="crown")
    assert np.all(cb.lo >= ib.lo - 1e-9) and np.all(cb.hi <= ib.hi + 1e-9)
    assert np.any(cb.hi - cb.lo < 0.9 * (ib.hi - ib.lo))
    for i in range(2):
        pts = _into_set(_ball_points(rng, x[i].astype(np.float64), eps, np.inf, 300), x[i].astype(np.float64),
                        eps, np.inf)
        out = evaluate_numpy(g, pts)
        assert np.all(out >= cb.lo[i]) and np.all(out <= cb.hi[i])


def test_bad_input_is_named():
    rng = np.random.default_rng(0)
    g = _net(rng, 4, (5,), 3, "relu")
    x = rng.uniform(0.2, 0.8, (2, 4))
    with pytest.raises(ValueError, match="method must be one of"):
        bounds.margin_bounds(g, x, [0, 1], eps=0.1, method="deeppoly")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        bounds.margin_bounds(g, x, [0, 7], eps=0.1)
    with pytest.raises(ValueError, match="lo <= hi"):
        bounds.margin_bounds(g, x, [0, 1], eps=0.1, box=(1.0, 0.0))
    with pytest.raises(ValueError, match="x contains NaN"):
        bounds.margin_bounds(g, np.full((2, 4), np.nan), [0, 1], eps=0.1)
    with pytest.raises(ValueError, match="eps must be"):
        bounds.margin_bounds(g, x, [0, 1], eps=-1.0)
    gelu = as_graph([Dense(np.ones((4, 3)), np.zeros(3)), Activation("gelu"), Dense(np.ones((3, 2)), np.zeros(2))], (4,))
    with pytest.raises(ValueError, match="gelu"):
        bounds.output_bounds(gelu, x, eps=0.1)
    with pytest.raises(ValueError, match=r"C must have K = 3 columns"):
        bounds.linear_bounds(g, x, np.ones((2, 4)), eps=0.1)
    with pytest.raises(ValueError, match="alpha_steps must be >= 0"):
        bounds.margin_bounds(g, x, [0, 1], eps=0.1, method="alpha-crown", alpha_steps=-5)
    with pytest.raises(ValueError, match="dtype must be None"):
        bounds.margin_bounds(g, x, [0, 1], eps=0.1, dtype=np.int32)
    from robustjax import models
    mlp = models.build("mlp", widths=(5,), num_classes=3)
    f = models.logits_fn(mlp, models.init(mlp, jax.random.key(0), (1, 6)))
    with pytest.raises(ValueError, match=r"net \(a logits_fn\) fails on inputs of example shape \(4,\)"):
        bounds.margin_bounds(f, x, [0, 1], eps=0.1)
    empty = bounds.certified_radius(g, x[:0], np.zeros(0, int))
    assert empty.radius.shape == (0,)


@pytest.mark.parametrize("arith", [None, np.float32])
def test_dense_rows_pulled_by_gather_equal_the_one_hot_pass(arith):
    """CROWN's intermediate rows start below a dense layer (its columns gathered, not one-hot rows multiplied):
    the bounds equal those of the same net with every dense layer applied on a `[1, n]` reshape, where the rows
    pass through the layer as one-hot rows (also with float32 rounding pads, and with a subset of rows per
    example packed across the batch: equal on it, IBP's bounds elsewhere)."""
    from robustjax.bounds import crown
    from robustjax.network.graph import Reshape
    rng = np.random.default_rng(3)
    dims = (5, 8, 7, 3)
    Ws = [(rng.normal(size=(a, b)) / np.sqrt(a), 0.3 * rng.normal(size=b)) for a, b in zip(dims[:-1], dims[1:])]
    flat, wrapped = [Flatten()], [Flatten()]
    for i, (W, b) in enumerate(Ws):
        flat.append(Dense(W, b))
        wrapped += [Reshape((1, W.shape[0])), Dense(W, b), Reshape((W.shape[1],))]
        if i < len(Ws) - 1:
            flat.append(ReLU())
            wrapped.append(ReLU())
    g1, g2 = as_graph(flat, (5,)), as_graph(wrapped, (5,))
    x = rng.uniform(0.3, 0.7, (2, 5))
    with jax.enable_x64(True):
        s = crown.InputSet(x, np.full((2,), 0.15), np.zeros_like(x), np.ones_like(x), np.inf)
        b1 = crown.intermediate_bounds(g1, s, crown.node_shapes(g1, (5,)), arith=arith)[0]
        b2 = crown.intermediate_bounds(g2, s, crown.node_shapes(g2, (5,)), arith=arith)[0]
        mask = rng.random((2, 7)) < 0.5                 # per example, packed across the batch in odd chunks
        mask[0, 0], mask[1, 0] = True, False
        parts = [crown.intermediate_bounds(g, s, crown.node_shapes(g, (5,)), arith=arith, chunk=chunk, active={
            k2: np.ones((2, 8), bool), k4: mask})[0] for g, k2, k4, chunk in ((g1, 2, 4, 3), (g2, 4, 8, 2))]
        with pytest.raises(ValueError, match="alpha_steps must be 0 where active is given, got 5"):
            crown.intermediate_bounds(g1, s, crown.node_shapes(g1, (5,)), alpha_steps=5, active={4: mask})
    pre1 = [k for k, n in enumerate(g1.nodes, 1) if isinstance(n.layer, Dense)]
    pre2 = [k + 1 for k, n in enumerate(g2.nodes, 1) if isinstance(n.layer, Dense)]   # the reshape after each
    assert all(isinstance(g2.nodes[k - 1].layer, Reshape) for k in pre2)
    for k1, k2 in zip(pre1, pre2):
        for a, b in ((b1[k1].lo, b2[k2].lo), (b1[k1].hi, b2[k2].hi)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b).reshape(np.shape(a)), rtol=1e-12, atol=1e-12)
    assert pre1[:2] == [2, 4] and pre2[:2] == [4, 8]
    for part, ref, (k2, k4) in ((parts[0], b1, pre1[:2]), (parts[1], b2, pre2[:2])):
        for k, m in ((k2, np.ones((2, 8), bool)), (k4, mask)):
            lo, hi = np.asarray(part[k].lo).reshape(2, -1), np.asarray(part[k].hi).reshape(2, -1)
            rlo, rhi = np.asarray(ref[k].lo).reshape(2, -1), np.asarray(ref[k].hi).reshape(2, -1)
            np.testing.assert_allclose(lo[m], rlo[m], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(hi[m], rhi[m], rtol=1e-12, atol=1e-12)
            assert np.all(lo[~m] <= rlo[~m]) and np.all(hi[~m] >= rhi[~m])     # IBP's, never tighter
        assert np.any(np.asarray(part[k4].lo).reshape(2, -1)[~mask] < np.asarray(ref[k4].lo).reshape(2, -1)[~mask])


def test_bound_programs_compile_once_per_architecture():
    """Three nets of one architecture share one CROWN program and one Theorem 2.1 program (the weights are
    arguments, `network.split`); each net's bounds are its own: a net bounded again after the others gives its
    first bounds bit for bit, and a net with other weights gets other bounds."""
    from robustjax.bounds import lipschitz, propagate
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 0.8, (3, 5))
    nets = [_net(np.random.default_rng(s), 5, (9, 9), 3, "softplus") for s in range(3)]
    labels = [bounds.predict_float64(g, x) for g in nets]
    p0 = propagate._program.cache_info().misses
    first = [bounds.margin_bounds(g, x, y, eps=0.05, method="crown") for g, y in zip(nets, labels)]
    assert propagate._program.cache_info().misses - p0 <= 1      # 0 if an earlier test built it
    l0 = lipschitz._bound_program.cache_info().misses
    radii = [lipschitz.theorem21_radius(g, x, y, steps=4).radius for g, y in zip(nets, labels)]
    assert lipschitz._bound_program.cache_info().misses - l0 <= 1
    again = bounds.margin_bounds(_net(np.random.default_rng(0), 5, (9, 9), 3, "softplus"), x, labels[0], eps=0.05,
                                 method="crown")
    np.testing.assert_array_equal(again, first[0])
    finite = np.isfinite(first[0]) & np.isfinite(first[1])
    assert finite.any() and not np.allclose(first[0][finite], first[1][finite])
    assert np.max(radii[0]) > 0 and not np.allclose(radii[0], radii[1])


@pytest.mark.parametrize("act, depth, p", [("relu", 3, np.inf), ("softplus", 2, 2.0)])
def test_random_net_campaign_finds_no_violation_and_catches_a_shrunk_bound(act, depth, p, monkeypatch):
    """The small version of benchmarks/bench_bounds_soundness.py (every method, float64 and float32 bounds against
    sampled and ascended points, certified radii near the boundary) finds 0 violations; the same campaign with
    every lower bound raised by 10 % of the bound's width (an unsound bound) counts violations in both dtypes."""
    bench = _BENCH
    row, = bench.run(2, seed=3, acts=(act,), depths=(depth,), norms=(p,), log=lambda m: None)
    assert row["violations"] == 0 and row["order_violations"] == 0, row
    assert row["points32"] > 0.7 * row["points64"] > 1000
    assert row["radius_pairs"]["crown"] >= 8 and (p != 2 or row["radius_pairs"]["theorem21"] >= 8), row
    linear_bounds = bench.bounds.linear_bounds

    def shrunk(*args, **kwargs):
        low = linear_bounds(*args, **kwargs)
        K = low.shape[1] // 2
        width = -low[:, K:] - low[:, :K]
        return low + 0.1 * np.concatenate([width, width], 1)
    monkeypatch.setattr(bench.bounds, "linear_bounds", shrunk)
    row, = bench.run(1, seed=3, acts=(act,), depths=(depth,), norms=(p,), log=lambda m: None)
    for dtype in ("64", "32"):
        assert sum(v for k, v in row["by_check"].items() if k.startswith(f"viol{dtype}_")) > 0, row
