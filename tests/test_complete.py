"""Complete verification never gives a wrong answer: its decisions agree with the exact MILP distance on small
ReLU nets, counterexamples are re-verified in float64, timeouts stay timeouts; the CLI writes the VNN-COMP format."""
import numpy as np
import pytest

from robustjax import cli, complete, verify, vnnlib
from robustjax.bounds import predict_float64
from robustjax.network import Dense, Flatten, ReLU, as_graph, evaluate_numpy


def _net(seed, sizes):
    rng = np.random.default_rng(seed)
    layers = [Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(ReLU())
        layers.append(Dense(rng.normal(size=(a, b)) / np.sqrt(a), 0.5 * rng.normal(size=b)))
    return as_graph(layers, (sizes[0],))


def test_decisions_agree_with_the_exact_milp_distance():
    g = _net(0, (5, 12, 12, 3))
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, (2, 5))
    y = predict_float64(g, x)
    seen = set()
    for i in range(len(x)):
        exact = verify.min_adversarial_milp(list(g.layers), x[i], int(y[i]), p=np.inf, time_limit=30)
        assert exact.status == "optimal"
        d = exact.distance
        for factor in (0.5, 1.5):
            eps = factor * d
            lo, hi = np.clip(x[i] - eps, 0, 1), np.clip(x[i] + eps, 0, 1)
            # a generous limit: a loaded CI machine must not turn the compile of the first CROWN into a timeout
            res = complete.verify_property(g, (lo, hi), int(y[i]), time_limit=120, bab_batch=8)
            seen.add(res.status)
            if res.status == "verified":
                assert eps < d * (1 + 1e-6), (i, factor)
            elif res.status == "counterexample":
                assert eps > d * (1 - 1e-6), (i, factor)
                cx = res.counterexample
                assert np.all(cx >= lo) and np.all(cx <= hi)
                out = evaluate_numpy(g, cx[None])[0]
                assert np.argmax(out) != y[i] or np.sort(out)[-1] == out[y[i]] and np.sum(out == out.max()) > 1
                np.testing.assert_allclose(res.outputs, out)
    assert {"verified", "counterexample"} <= seen


@pytest.mark.parametrize("branching,intermediate", [("shallow", "crown"), ("babsr", "ibp")])
def test_branch_and_bound_decides_what_crown_cannot(branching, intermediate):
    g = _net(3, (4, 16, 16, 2))
    rng = np.random.default_rng(4)
    x = rng.uniform(0.3, 0.7, (8, 4))
    y = predict_float64(g, x)
    used_bab = False
    for i in range(len(x)):
        if used_bab:
            break
        d = verify.min_adversarial_milp(list(g.layers), x[i], int(y[i]), p=np.inf, time_limit=30).distance
        eps = 0.97 * d
        res = complete.verify_property(g, (np.clip(x[i] - eps, 0, 1), np.clip(x[i] + eps, 0, 1)), int(y[i]),
                                       time_limit=60, bab_batch=16, milp_max_unstable=0, bab_branching=branching,
                                       bab_intermediate=intermediate)
        assert res.status in ("verified", "unknown", "timeout"), res
        used_bab |= res.stage == "bab"
    assert used_bab, "no instance needed branch and bound: the test lost its point"


@pytest.mark.parametrize("intermediate", ["crown", "ibp"])
def test_beta_crown_subdomain_bounds_hold_on_every_feasible_point(intermediate):
    """The branch-and-bound bound of a subdomain (intermediate bounds re-bounded by CROWN with the splits known,
    or the root's clamped and tightened by IBP; alpha and beta optimized) never exceeds the safety margin of a
    sampled point that satisfies the subdomain's splits, and the optimized bound is never below the unoptimized
    one. With CROWN, every node's subdomain bounds contain every such point's values."""
    import jax
    from robustjax.bounds import crown
    g = _net(7, (4, 10, 10, 10, 3))
    x = np.full(4, 0.5)
    y = int(predict_float64(g, x[None])[0])
    lo, hi = x - 0.3, x + 0.3
    prop = complete.as_property((lo, hi), y, 3)
    with jax.enable_x64(True):
        _, root = complete._root_bounds(g, x[None], (lo[None], hi[None]), complete._spec(prop)[0], 10)
        plain = complete._BaB(g, prop, root, 16, steps=0, intermediate=intermediate)
        beta = complete._BaB(g, prop, root, 16, steps=30, intermediate=intermediate)
    pts = np.random.default_rng(0).uniform(lo, hi, (5000, 4))
    pre = {}
    h = pts
    for k, node in enumerate(g.nodes, 1):
        h = evaluate_numpy(as_graph([node.layer], h.shape[1:]), h)
        pre[k] = h
    A, b, group = complete._spec(prop)
    true = complete._safety(pre[len(g.nodes)] @ A.T - b, group, len(prop.unsafe))
    rng = np.random.default_rng(1)
    splits, masks = [], []
    for _ in range(24):
        sp, ok = {}, np.ones(len(pts), bool)
        anchor = rng.integers(len(pts))
        for _, z in plain.relus:
            s = np.zeros(10, np.int8)
            units = rng.choice(10, 2, replace=False)
            s[units] = np.where(pre[z][anchor, units] >= 0, 1, -1)
            sp[z] = s
            for u in units:
                ok &= (pre[z][:, u] >= 0) if s[u] > 0 else (pre[z][:, u] <= 0)
        splits.append(sp)
        masks.append(ok)
    with jax.enable_x64(True):
        known = [plain.root_domain()[1]] * len(splits)
        low0, inf0 = plain.bound(splits, known)[:2]
        low1, inf1, _, _, kept = beta.bound(splits, known)
        # a subdomain given its parent's bounds (here: its own) stays sound
        low2 = beta.bound(splits, kept)[0]
    checked = 0
    for i, ok in enumerate(masks):
        assert low1[i] >= low0[i] - 1e-9
        if ok.any():
            assert not inf1[i]
            assert low1[i] <= true[ok].min() + 1e-9, (i, low1[i], true[ok].min())
            assert low2[i] <= true[ok].min() + 1e-9, (i, low2[i], true[ok].min())
            checked += 1
    assert checked == len(masks)
    assert np.mean(low1 - low0) > 0, "beta and alpha never tightened a bound: the test lost its point"
    if intermediate == "crown":
        with jax.enable_x64(True):
            s = crown.InputSet(np.full((1, 4), 0.5), np.full((1,), 1e30), lo[None], hi[None], np.inf)
            shapes = crown.node_shapes(g, g.input_shape)
            for sp, ok in zip(splits, masks):
                bounds, _, _ = crown.intermediate_bounds(g, s, shapes, given=root,
                                                         splits={z: v[None] for z, v in sp.items()})
                for k in pre:
                    assert np.all(pre[k][ok] >= np.asarray(bounds[k].lo[0]) - 1e-9), k
                    assert np.all(pre[k][ok] <= np.asarray(bounds[k].hi[0]) + 1e-9), k
                tighter = [np.all(np.asarray(bounds[k].lo) >= root[k].lo - 1e-12) for k in pre]
                assert all(tighter)


def test_split_units_picks_the_best_candidates_across_layers():
    scores = {3: np.array([-1.0, 2.5, 0.1]), 5: np.array([7.0, -1.0, 3.0])}
    assert complete._split_units(scores, [3, 5], 3) == [(5, 0), (5, 2), (3, 1)]
    assert complete._split_units(scores, [3, 5], 9) == [(5, 0), (5, 2), (3, 1), (3, 2)]   # only 4 candidates
    assert complete._split_units({3: np.array([-1.0, -1.0])}, [3], 2) == []


def _crown_root_case():
    """A 3-layer ReLU net, an l_inf box of 0.25 around 0.5, its 'argmax stays' property and CROWN's root bounds."""
    import jax
    g = _net(3, (4, 12, 12, 12, 3))
    x = np.full(4, 0.5)
    lo, hi = x - 0.25, x + 0.25
    prop = complete.as_property((lo, hi), int(predict_float64(g, x[None])[0]), 3)
    with jax.enable_x64(True):
        _, root = complete._root_bounds(g, x[None], (lo[None], hi[None]), complete._spec(prop)[0], 0)
    return g, x, lo, hi, prop, root


def test_root_scores_equal_a_batch_bound_of_the_root():
    """The root's branching scores come from one eager CROWN pass instead of a batch: with CROWN's root bounds and
    no slope steps they equal what `bound` gives the root domain, for both branchings."""
    import jax
    g, x, lo, hi, prop, root = _crown_root_case()
    with jax.enable_x64(True):
        for branching in ("shallow", "babsr"):
            bab = complete._BaB(g, prop, root, 4, steps=0, branching=branching)
            zero, known = bab.root_domain()
            batch = bab.bound([zero], [known])[3][0]
            eager = bab.root_scores()
            assert any(np.any(v >= 0) for v in eager.values())
            for z in batch:
                np.testing.assert_allclose(eager[z], batch[z], rtol=1e-9, atol=1e-12)


def test_padded_rows_policy(monkeypatch):
    """Rows pad to the layer's width up to `_FULL_ROWS` units, else to the next power of two; the padding repeats
    the first row (unit 0 for a layer without rows) and is masked."""
    rows = np.array([3, 7, 9])
    r, m = complete._padded_rows(rows, 12)
    assert list(r) == [3, 7, 9] + [3] * 9 and list(m) == [True] * 3 + [False] * 9
    monkeypatch.setattr(complete, "_FULL_ROWS", 8)
    r, m = complete._padded_rows(rows, 12)
    assert list(r) == [3, 7, 9, 3] and list(m) == [True, True, True, False]
    assert [complete._padded_rows(np.arange(k), 12)[0].size for k in (1, 2, 5, 8, 9, 12)] == [1, 2, 8, 8, 12, 12]
    r, m = complete._padded_rows(np.arange(0), 12)
    assert list(r) == [0] and list(m) == [False]


def test_padded_rows_change_no_bound_and_programs_are_shared(monkeypatch):
    """The batch program's rows (the units unstable at the root) are padded with repeats of a real row, masked:
    with power-of-two buckets (forced here; the default for layers wider than `_FULL_ROWS`), on subdomains with
    splits, bounds, candidates, kept bounds and the scores of the real rows equal those of unpadded rows, and
    padded rows never score. BaB objects add exactly one program per distinct row-count signature: with the
    default padding (12-unit layers: to their width) another net of the architecture and a repeated property
    reuse the first one's."""
    import jax
    g, x, lo, hi, prop, root = _crown_root_case()
    rng = np.random.default_rng(4)
    n0 = complete._bab_bound._cache_size()
    signature = lambda b: tuple(b.rows[z].size for _, z in b.relus)  # noqa: E731
    with jax.enable_x64(True):
        monkeypatch.setattr(complete, "_FULL_ROWS", 4)
        bab = complete._BaB(g, prop, root, 4, steps=5)
        assert any((~v).any() for v in bab.real.values())       # the case pads
        zero, known = bab.root_domain()
        splits = []
        for _ in range(6):
            sp = {z: v.copy() for z, v in zero.items()}
            for _, z in bab.relus:
                real = bab.rows[z][bab.real[z]]
                if real.size:
                    sp[z][rng.choice(real, min(2, real.size), replace=False)] = rng.choice([-1, 1], min(2, real.size))
            splits.append(sp)
        padded = bab.bound(splits, [known] * 6)
        monkeypatch.setattr(complete, "_padded_rows", lambda rows, n: (rows, np.ones(rows.size, bool)))
        plain = complete._BaB(g, prop, root, 4, steps=5)
        ref = plain.bound(splits, [plain.root_domain()[1]] * 6)
        monkeypatch.undo()
        signatures = {signature(bab), signature(plain)}
        widths = tuple(int(np.prod(bab.shapes[z])) for _, z in bab.relus)
        for seed in (3, 13, 23):                       # seed 3: bab's own net and property again
            net = _net(seed, (4, 12, 12, 12, 3))
            p = complete.as_property((lo, hi), int(predict_float64(net, x[None])[0]), 3)
            _, rb = complete._root_bounds(net, x[None], (lo[None], hi[None]), complete._spec(p)[0], 0)
            b = complete._BaB(net, p, rb, 4, steps=5)
            assert signature(b) == widths
            z0, k0 = b.root_domain()
            b.bound([z0], [k0])
            signatures.add(signature(b))
    assert complete._bab_bound._cache_size() - n0 == len(signatures) <= 3
    for a, b in zip(padded[:3], ref[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    for i in range(6):
        for _, z in bab.relus:
            m = bab.real[z]
            np.testing.assert_allclose(padded[3][i][z][m], ref[3][i][z], rtol=1e-9, atol=1e-12)
            assert np.all(padded[3][i][z][~m] == -1)
            for j in (0, 1):
                np.testing.assert_allclose(padded[4][i][z][j][m], ref[4][i][z][j], rtol=1e-9, atol=1e-12)


def test_rebounding_only_the_roots_unstable_units_changes_no_relaxation():
    """intermediate_bounds(active=...) with the root's unstable units re-bounds only those: on them the bounds equal
    the full run's; the others keep the given bounds, which are sound and decide the same (stable) relaxation."""
    import jax
    from robustjax.bounds import crown
    g, x, lo, hi, prop, root = _crown_root_case()
    with jax.enable_x64(True):
        bab = complete._BaB(g, prop, root, 4)
        rows = {z: bab.rows[z][bab.real[z]] for _, z in bab.relus}     # without the padding
        assert 0 < sum(v.size for v in rows.values()) < sum(np.prod(bab.shapes[z]) for _, z in bab.relus)
        s = crown.InputSet(x[None], np.full((1,), 1e30), lo[None], hi[None], np.inf)
        full = crown.intermediate_bounds(g, s, bab.shapes, given=root)[0]
        active = {z: np.isin(np.arange(np.prod(bab.shapes[z])), rows[z])[None] for _, z in bab.relus}
        part = crown.intermediate_bounds(g, s, bab.shapes, given=root, active=active, chunk=5)[0]
    for _, z in bab.relus:
        u = rows[z]
        np.testing.assert_allclose(np.asarray(part[z].lo)[0, u], np.asarray(full[z].lo)[0, u], atol=1e-12)
        np.testing.assert_allclose(np.asarray(part[z].hi)[0, u], np.asarray(full[z].hi)[0, u], atol=1e-12)
        same_sign = lambda b: np.sign(np.asarray(b.lo)) + np.sign(np.asarray(b.hi))
        np.testing.assert_array_equal(same_sign(part[z]), same_sign(full[z]))


def test_property_milp_decides_exactly_at_the_minimal_distance():
    """Boxes of l_inf radius just below / above the exact minimal distance d: the property MILP proves the first
    (a positive lower bound) and returns a float64-confirmed counterexample for the second; verify_property
    decides the first by its MILP stage."""
    g = _net(0, (5, 12, 12, 3))
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, (2, 5))
    y = predict_float64(g, x)
    for i in range(len(x)):
        exact = verify.min_adversarial_milp(list(g.layers), x[i], int(y[i]), p=np.inf, time_limit=30)
        assert exact.status == "optimal"
        d = exact.distance
        for factor, want in ((0.98, "verified"), (1.02, "counterexample")):
            lo, hi = np.clip(x[i] - factor * d, 0, 1), np.clip(x[i] + factor * d, 0, 1)
            prop = complete.as_property((lo, hi), int(y[i]), 3)
            r = verify.property_milp(list(g.layers), prop, time_limit=30)
            assert r.status == want, (i, factor, r)
            if want == "verified":
                assert r.lower_bound > 0
                res = complete.verify_property(g, prop, time_limit=60)
                assert (res.status, res.stage) == ("verified", "milp") or res.stage in ("crown", "alpha-crown"), res
            else:
                assert np.all(r.x >= lo) and np.all(r.x <= hi) and prop.violated_by(evaluate_numpy(g, r.x[None])[0])
                assert r.lower_bound <= 0


def test_crown_big_m_bounds_contain_the_network_and_keep_the_optimum():
    """verify.layer_bounds: CROWN inside IBP, both containing every sampled point's activations; the MILP's
    minimal distance is the same with either."""
    g = _net(1, (5, 12, 12, 3))
    layers = list(g.layers)
    x = np.full(5, 0.5)
    r = 0.2
    lo, hi = x - r, x + r
    ib = verify.layer_bounds(layers, x, lo, hi, method="ibp")
    cb = verify.layer_bounds(layers, x, lo, hi, method="crown")
    z = np.random.default_rng(0).uniform(lo, hi, (3000, 5))
    h = z
    for layer, (il, ih), (cl, ch) in zip(layers, ib, cb):
        h = evaluate_numpy(as_graph([layer], h.shape[1:]), h)
        assert np.all(cl >= il - 1e-12) and np.all(ch <= ih + 1e-12)
        assert np.all(h >= cl - 1e-9) and np.all(h <= ch + 1e-9)
    assert sum(np.sum(ch - cl) for cl, ch in cb) < sum(np.sum(ih - il) for il, ih in ib)
    y = int(predict_float64(g, x[None])[0])
    a = verify.min_adversarial_milp(layers, x, y, p=1, bounds="ibp", time_limit=30)
    b = verify.min_adversarial_milp(layers, x, y, p=1, bounds="crown", time_limit=30)
    assert a.status == b.status == "optimal"
    np.testing.assert_allclose(a.distance, b.distance, rtol=1e-6)


def test_batched_check_returns_the_first_float64_counterexample_inside_the_box():
    g = _net(3, (4, 16, 3))
    lo, hi = np.zeros(4), np.ones(4)
    xs = np.random.default_rng(0).uniform(-0.5, 1.5, (200, 4))           # partly outside the box: clipped
    out = evaluate_numpy(g, np.clip(xs, lo, hi))
    label = int(np.bincount(np.argmax(out, 1)).argmax())
    prop = complete.as_property((lo, hi), label, 3)
    bad = [i for i in range(len(xs)) if prop.violated_by(out[i])]
    assert bad and len(bad) < len(xs)
    x, y = complete._check_many(g, prop, xs)
    np.testing.assert_array_equal(x, np.clip(xs[bad[0]], lo, hi))
    np.testing.assert_allclose(y, out[bad[0]])
    good = np.delete(xs, bad, 0)
    assert complete._check_many(g, prop, good) is None and complete._check_many(g, prop, good[:0]) is None
    assert complete._check(g, prop, xs[bad[-1]]) is not None


def test_subdomains_with_nothing_left_to_split_are_decided_exactly(monkeypatch):
    """Branch and bound without beta steps leaves fully split subdomains whose bound is still negative; each is
    decided by the LP of its split signs (`complete._leaf_milp`), so every property here is decided, rightly
    (against the MILP distance d, at eps = d (1 -+ 1 %)), and the same search without that step says 'unknown'."""
    seen = set()
    for seed in (1, 3):
        g = _net(seed, (3, 6, 6, 3))
        x = np.random.default_rng(seed).uniform(0.3, 0.7, (2, 3))
        y = predict_float64(g, x)
        for i in range(len(x)):
            exact = verify.min_adversarial_milp(list(g.layers), x[i], int(y[i]), p=np.inf, time_limit=30)
            assert exact.status == "optimal"
            for factor in (0.99, 1.01):
                eps = factor * exact.distance
                box = (np.clip(x[i] - eps, 0, 1), np.clip(x[i] + eps, 0, 1))
                res = complete.verify_property(g, box, int(y[i]), time_limit=120, bab_batch=4, milp_max_unstable=0,
                                               bab_steps=0, falsify_restarts=1, falsify_steps=1)
                assert res.status == ("verified" if factor < 1 else "counterexample"), (seed, i, factor, res)
                seen.add((res.status, res.stage))
                if res.stage == "bab":
                    last = (g, box, int(y[i]))
    assert {("verified", "bab"), ("counterexample", "bab")} <= seen, seen
    monkeypatch.setattr(complete, "_leaf_milp", lambda *args, **kwargs: None)
    res = complete.verify_property(last[0], last[1], last[2], time_limit=120, bab_batch=4, milp_max_unstable=0,
                                   bab_steps=0, falsify_restarts=1, falsify_steps=1)
    assert res.status == "unknown", res


def test_a_second_network_of_the_same_architecture_compiles_nothing(caplog):
    """verify_property's programs take the weights as arguments (the region attack too: `network.as_function`),
    so a second net of one architecture compiles nothing. A closure per call compiled the region attack's eight
    programs anew each time, and a process deciding a few hundred properties ran out of memory mappings."""
    import jax
    nets = [_net(seed, (5, 16, 3)) for seed in (40, 41)]
    x = np.full(5, 0.5)

    def decide(g):
        y = int(predict_float64(g, x[None])[0])
        return complete.verify_property(g, (x - 0.05, x + 0.05), y, time_limit=120, falsify_restarts=2)
    first = decide(nets[0])
    assert first.stage not in ("pgd", "region"), first       # the region attack ran
    caplog.set_level("WARNING")
    with jax.log_compiles(True):
        second = decide(nets[1])
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert second.stage not in ("pgd", "region") and not compiled, (second, compiled)


def test_timeout_is_reported_never_verified():
    g = _net(5, (6, 32, 32, 32, 3))
    x = np.full(6, 0.5)
    y = int(predict_float64(g, x[None])[0])
    res = complete.verify_property(g, (np.zeros(6), np.ones(6)), y, time_limit=1e-3)
    assert res.status in ("timeout", "counterexample")


def test_cli_verify_writes_the_competition_format(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    g = _net(19, (3, 8, 2))
    dense = [layer for layer in g.layers if isinstance(layer, Dense)]
    nodes = [helper.make_node("Gemm", ["x", "W0", "b0"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W1", "b1"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in
             [("W0", dense[0].W), ("b0", dense[0].b), ("W1", dense[1].W), ("b1", dense[1].b)]]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    net = tmp_path / "net.onnx"
    onnx.save(model, str(net))
    pool = np.random.default_rng(8).uniform(0, 1, (200, 3))
    pred = predict_float64(g, pool)
    xa, xb = pool[0], pool[np.flatnonzero(pred != pred[0])[0]]
    t = np.linspace(0, 1, 2001)
    first = np.argmax(predict_float64(g, xa + t[:, None] * (xb - xa)) != pred[0])
    x = xa + 0.8 * t[first] * (xb - xa)          # inside the class of xa, near its boundary
    c = int(pred[0])
    d = verify.min_adversarial_milp(list(g.layers), x, c, p=np.inf, time_limit=30).distance
    assert d < 0.4
    props = {}
    for eps, expect in ((0.5 * d, "holds"), (min(1.0, 2 * d), "violated")):
        lines = [f"(declare-const X_{i} Real)" for i in range(3)] + [f"(declare-const Y_{j} Real)" for j in range(2)]
        lines += [f"(assert (>= X_{i} {max(0.0, v - eps)}))\n(assert (<= X_{i} {min(1.0, v + eps)}))" for i, v in enumerate(x)]
        lines += [f"(assert (>= Y_{1 - c} Y_{c}))"]
        prop = props[expect] = tmp_path / f"p{eps}.vnnlib"
        prop.write_text("\n".join(lines))
        out = tmp_path / "result.txt"
        code = cli.main(["verify", str(net), str(prop), "--timeout", "30", "--out", str(out), "--quiet"])
        text = out.read_text()
        assert text.splitlines()[0] == expect and code == 0
        if expect == "violated":
            vals = dict(line.strip("()").split() for line in text.splitlines()[2:-1])
            cx = np.array([float(vals[f"X_{i}"]) for i in range(3)])
            assert vnnlib.load(prop).violated_by(evaluate_numpy(g, cx[None])[0])
    assert cli.main(["verify", str(net), str(tmp_path / "missing.vnnlib")]) == 2
    wide = tmp_path / "wide.vnnlib"        # 4 inputs for a network of 3: refused before any work, exit status 2
    wide.write_text("\n".join([f"(declare-const X_{i} Real)" for i in range(4)] + ["(declare-const Y_0 Real)",
                               "(declare-const Y_1 Real)"] + [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))"
                                                              for i in range(4)] + ["(assert (>= Y_1 Y_0))"]))
    assert cli.main(["verify", str(net), str(wide), "--quiet", "--cache-dir", ""]) == 2
    # a cache JAX already has (conftest's) is kept; a fresh process fills the one --cache-dir names
    import os
    import subprocess
    import sys
    import jax
    before = jax.config.jax_compilation_cache_dir
    assert cli.compilation_cache(str(tmp_path / "unused")) == before and not (tmp_path / "unused").exists()
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    cache = tmp_path / "cache"
    run = subprocess.run([sys.executable, "-m", "robustjax.cli", "verify", str(net), str(props["holds"]),
                          "--timeout", "30", "--quiet", "--cache-dir", str(cache)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.splitlines()[0] == "holds", run.stderr[-2000:]
    assert any(cache.iterdir())


def test_bad_input_is_named():
    g = _net(0, (5, 6, 3))
    with pytest.raises(ValueError, match="lo <= hi"):
        complete.verify_property(g, (np.ones(5), np.zeros(5)), 0)
    with pytest.raises(ValueError, match=r"label must lie in \[0, 3\)"):
        complete.verify_property(g, (np.zeros(5), np.ones(5)), 4)
    with pytest.raises(ValueError, match="the input box must be finite"):
        complete.verify_property(g, (np.full(5, -np.inf), np.ones(5)), 0)
    prop = complete.as_property((np.zeros(5), np.ones(5)), 0, 3)
    with pytest.raises(ValueError, match="label must be None with a vnnlib.Property"):
        complete.verify_property(g, prop, 2)
    with pytest.raises(ValueError, match="the property constrains 3 outputs, the network has 4"):
        complete.verify_property(_net(0, (5, 6, 4)), prop)
    for kw, message in ((dict(method="foo"), "method must be one of"), (dict(alpha_steps=-5), "alpha_steps"),
                        (dict(bab_batch=0), "bab_batch"), (dict(milp_share=1.5), r"milp_share must lie in \[0, 1\]"),
                        (dict(alpha_lr=float("nan")), "alpha_lr")):
        with pytest.raises(ValueError, match=message):
            complete.verify_property(g, prop, **kw)
    with pytest.raises(ValueError, match="the property has 4 inputs, the network 5"):
        complete.verify_property(g, (np.zeros(4), np.ones(4)), 0)
    with pytest.raises(ValueError, match="bab_branching must be one of"):
        complete.verify_property(g, (np.zeros(5), np.ones(5)), 0, bab_branching="fsb")
    with pytest.raises(ValueError, match="time_limit"):
        complete.verify_property(g, (np.zeros(5), np.ones(5)), 0, time_limit=-1)
