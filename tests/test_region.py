"""The randomized region attack (robustjax/attacks/region.py and its parts: region_oracle, region_starts,
robustjax.solvers) against exact references: closed forms on linear models, the MILP (l_inf, l1) and the 2-D
region walk (l2) on tiny random ReLU nets, small random nets of 10-12 inputs against the exact optimum in all three
norms (l2 by bench_region_small.py's outer-approximation MILP), never worse than the cheap starts (DeepFool, DDN,
minimal PGD), one region's convex problem against a dense grid; validity of every
returned example; per-example boxes; the switches on conv/max-pool nets; input checks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models, network, verify
from robustjax.attacks import Box
from robustjax.attacks.region import Problem, region, region_solve, region_solve_batch
from robustjax.attacks.region_oracle import make_oracle, switch_fn
from robustjax.attacks.region_starts import cheap_attacks
from robustjax.geometry import halfspace_box_distance, halfspace_box_step, lp_norm
from robustjax.solvers import solve_min_norm

P_ALL = [2, np.inf, 1]


from _nets import load_benchmark, random_net  # noqa: E402  (tests/ is on sys.path under pytest)


def as_logits_fn(layers):
    """The layers (Flatten first) as a JAX function `[batch, d]` -> `[batch, K]` (`network.as_function`: the
    weights are jit arguments, so nets of one architecture share compiled attacks; float32 unless x64 is on)."""
    return network.as_function(network.as_graph(list(layers)))


def check_valid(f, x, labels, res, box=Box()):
    """Every success is adversarial, inside the box, at the reported distance; failures are inf."""
    pred = np.asarray(jnp.argmax(f(jnp.asarray(res.x_adv)), -1))
    lo, hi = np.asarray(box.lo), np.asarray(box.hi)
    assert np.all(res.x_adv >= lo) and np.all(res.x_adv <= hi)
    assert np.all(pred[res.success & (res.distance > 0)] != np.asarray(labels)[res.success & (res.distance > 0)])
    assert np.all(np.isinf(res.distance[~res.success]))
    d = np.asarray(res.x_adv - np.asarray(x)).reshape(len(x), -1)
    norm = np.linalg.norm(d, ord=res.p, axis=1)
    np.testing.assert_allclose(norm[res.success], res.distance[res.success], rtol=1e-5, atol=1e-7)


def test_halfspace_box_distance_matches_osqp():
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.uniform(size=20)
        x[:5] = 0.0
        w, r = rng.normal(size=20), 0.8
        for p in P_ALL:
            lb = float(halfspace_box_distance(jnp.asarray(w), r, jnp.asarray(x), jnp.zeros(20), jnp.ones(20), p))
            z = solve_min_norm(x, w[None], np.array([r + w @ x]), np.zeros(20), np.ones(20), p)
            np.testing.assert_allclose(lb, np.linalg.norm(z - x, ord=p), rtol=1e-4)


@pytest.mark.parametrize("p", [np.inf, 1])
def test_lp_solvers_agree(p):
    """Three random halfspaces in the box: HiGHS's LP optimum (exactly feasible) equals OSQP's (another
    algorithm, accurate to ADMM's tolerance) and the interior-point method's (to its certified gap), and is at
    least the distance to each halfspace alone."""
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.uniform(size=15)
        G = rng.normal(size=(3, 15))
        h = G @ x + rng.uniform(0.2, 0.6, size=3)
        a = solve_min_norm(x, G, h, np.zeros(15), np.ones(15), p, lp_solver="highs")
        b = solve_min_norm(x, G, h, np.zeros(15), np.ones(15), p, lp_solver="osqp")
        assert np.all(G @ a >= h - 1e-9) and np.all(a >= 0) and np.all(a <= 1)
        assert np.all(G @ b >= h - 1e-3) and np.all(b >= -1e-3) and np.all(b <= 1 + 1e-3)   # ADMM accuracy
        np.testing.assert_allclose(np.linalg.norm(a - x, ord=p), np.linalg.norm(b - x, ord=p), rtol=1e-2)
        c = solve_min_norm(x, G, h, np.zeros(15), np.ones(15), p, lp_solver="ipm")
        np.testing.assert_allclose(np.linalg.norm(a - x, ord=p), np.linalg.norm(c - x, ord=p), rtol=2e-7)
        single = max(float(halfspace_box_distance(jnp.asarray(G[k]), h[k] - G[k] @ x, jnp.asarray(x), 0.0, 1.0, p))
                     for k in range(3))
        assert np.linalg.norm(a - x, ord=p) >= single * (1 - 1e-6)
    with pytest.raises(ValueError, match="lp_solver"):
        solve_min_norm(x, G, h, np.zeros(15), np.ones(15), p, lp_solver="glpk")


def test_region_problem_equals_a_dense_grid():
    """One region's l2 problem (`region_solve`: the active-set loop over the region rows) on a 2-D ReLU net:
    its optimum equals the closest point of a 801 x 801 grid of the box that has y's pattern and is classified
    t, up to the grid spacing, and is never above it. `region_solve_batch` (the lockstep, vmapped path) solves all
    these problems in one call to the same optima."""
    layers = random_net(8, [2, 10, 10, 3])      # two classes share the box
    f = as_logits_fn(layers)
    graph = network.as_graph(layers)._replace(input_shape=(2,))
    oracle = make_oracle(f, None, (2,), jnp.dtype(jnp.float32))
    g = np.stack(np.meshgrid(np.linspace(0, 1, 801), np.linspace(0, 1, 801)), -1).reshape(-1, 2)
    pats = network.pattern(graph, g)
    out = verify.forward(layers, g)
    pred = np.argmax(out, 1)
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(8):
        x = rng.uniform(0.2, 0.8, size=2)
        c = int(np.argmax(verify.forward(layers, x[None])))
        if not np.any(pred != c):
            continue
        y = g[rng.choice(np.flatnonzero(pred != c))] + rng.uniform(-4e-4, 4e-4, size=2)   # a region reaching t
        t = int(np.argmax(verify.forward(layers, y[None])))
        if t == c:
            continue
        r = network.region_map(graph, y)
        live = r.sign != 0
        ok = np.all(pats[:, live] == r.sign[live], axis=1) & (out[:, t] >= out[:, c])
        w = r.F[:, t] - r.F[:, c]
        pb = Problem(oracle, x, c, np.zeros(2), np.ones(2), 2.0, 10, 6.0, None, 50, "highs")
        sw = oracle.probe(jnp.asarray(y[None], jnp.float32))[1][0]
        G0, h0 = (w / np.linalg.norm(w))[None], np.array([(r.f0[c] - r.f0[t]) / np.linalg.norm(w)])
        sol, _, _ = region_solve(pb, y, np.asarray(sw, np.float64), G0, h0, np.inf, np.zeros(0))
        assert sol is not None                              # y itself is feasible
        dist = np.linalg.norm(sol[0] - x)
        tasks = [(y, np.asarray(sw, np.float64), G0, h0, {})]
        for y2 in g[rng.choice(np.flatnonzero(pred != c), 3)] + rng.uniform(-4e-4, 4e-4, size=(3, 2)):
            r2 = network.region_map(graph, y2)
            t2 = int(np.argmax(verify.forward(layers, y2[None])))
            w2 = r2.F[:, t2] - r2.F[:, c]
            sw2 = np.asarray(oracle.probe(jnp.asarray(y2[None], jnp.float32))[1][0], np.float64)
            tasks.append((y2, sw2, (w2 / np.linalg.norm(w2))[None], np.array([(r2.f0[c] - r2.f0[t2]) / np.linalg.norm(w2)]), {}))
        one = [region_solve(pb, *task[:4], np.inf, np.zeros(0))[0] for task in tasks]
        batch, _, _ = region_solve_batch(pb, tasks, np.inf, np.zeros(0))
        for a, b in zip(one, batch):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(np.linalg.norm(b[0] - x), np.linalg.norm(a[0] - x), rtol=1e-6, atol=1e-9)
        if ok.any():
            grid = np.min(np.linalg.norm(g[ok] - x, axis=1))
            assert dist <= grid + 1e-6
            assert grid - dist <= np.sqrt(2) / 800 + 1e-6
            compared += 1
    assert compared >= 6


@pytest.mark.parametrize("p", P_ALL)
def test_linear_model_exact_distance(p):
    """A linear classifier is one region: the attack must reach |f_c - f_t| / ||w_c - w_t||_q."""
    layers = random_net(5, [6, 4], bias=0.1)
    f = as_logits_fn(layers)
    x = np.full((3, 6), 0.5, np.float32) + np.random.default_rng(1).uniform(-0.05, 0.05, (3, 6)).astype(np.float32)
    out = verify.forward(layers, x)
    labels = np.argmax(out, 1)
    W = layers[1].W
    q = {2: 2, np.inf: 1, 1: np.inf}[p]
    ref = [min((out[i, c] - out[i, t]) / np.linalg.norm(W[:, c] - W[:, t], ord=q) for t in range(4) if t != c)
           for i, c in enumerate(labels)]
    res = region(f, x, labels, p=p, key=jax.random.key(0), box=Box(-20.0, 20.0), n_regions=5)
    check_valid(f, x, labels, res, Box(-20.0, 20.0))
    assert np.all(res.distance >= np.array(ref) * (1 - 1e-6))
    np.testing.assert_allclose(res.distance, ref, rtol=2e-4)


@pytest.mark.parametrize("p,batched", [(np.inf, False), (1, False), (np.inf, True)])
def test_within_one_percent_of_milp(p, batched):
    """Tiny random ReLU nets 8-12-12-3: exact <= region <= 1.01 exact (exact by MILP), with the sequential and
    (l_inf, on one net: each net costs its compilations) the batched rounds (vmapped interior-point LPs)."""
    compared = 0
    for seed in (1,) if batched else range(3):
        layers = random_net(seed, [8, 12, 12, 3])
        f = as_logits_fn(layers)
        x = np.random.default_rng(seed + 50).uniform(0.2, 0.8, size=(3, 8)).astype(np.float32)
        labels = np.argmax(verify.forward(layers, x), 1)
        res = region(f, x, labels, p=p, key=jax.random.key(seed), n_regions=40, batched=batched)
        check_valid(f, x, labels, res)
        for i in range(3):
            ex = verify.min_adversarial_milp(layers, x[i], int(labels[i]), p=p, time_limit=30,
                                             max_distance=None if not res.success[i] else 1.001 * res.distance[i])
            if not res.success[i]:
                assert ex.status == "infeasible"
                continue
            assert ex.status == "optimal"
            assert res.distance[i] >= ex.distance - 1e-6
            assert res.distance[i] <= 1.01 * ex.distance
            compared += 1
    assert compared >= (3 if batched else 5)


@pytest.mark.parametrize("batched", [False, True])
def test_within_one_percent_of_exact_l2_2d(batched):
    """2-8-8-3 ReLU nets: exact <= region <= 1.01 exact (exact by walking all linear regions), with the sequential
    and the batched (lockstep, vmapped) rounds."""
    compared = 0
    for seed in range(3):
        layers = random_net(seed + 2, [2, 8, 8, 3])
        f = as_logits_fn(layers)
        x = np.random.default_rng(seed + 7).uniform(size=(4, 2)).astype(np.float32)
        labels = np.argmax(verify.forward(layers, x), 1)
        res = region(f, x, labels, p=2, key=jax.random.key(seed), n_regions=30, batched=batched)
        check_valid(f, x, labels, res)
        for i in range(4):
            ex = verify.min_adversarial_l2_2d(layers, x[i], int(labels[i]))
            if not np.isfinite(ex.distance):
                assert not res.success[i]
                continue
            assert res.distance[i] >= ex.distance - 1e-6
            assert res.distance[i] <= 1.01 * ex.distance
            compared += 1
    assert compared >= 6


def test_info_determinism_and_misclassified():
    """The same key gives the same result; info's trajectory starts at the start distance and ends at the
    returned distance; the search improves on its start; a misclassified input gets distance 0 and x_adv = x."""
    layers = random_net(3, [8, 12, 12, 3])
    f = as_logits_fn(layers)
    x = np.random.default_rng(3).uniform(0.2, 0.8, size=(4, 8)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    labels[3] = (labels[3] + 1) % 3
    r1 = region(f, x, labels, p=2, key=jax.random.key(4), n_regions=12, batch_regions=5)
    r2 = region(f, x, labels, p=2, key=jax.random.key(4), n_regions=12, batch_regions=5)
    np.testing.assert_array_equal(r1.distance, r2.distance)
    info = r1.info
    assert info["trajectory"].shape == (4, 13) and r1.time_s.shape == (4,)
    ok = r1.success & (r1.distance > 0)
    np.testing.assert_allclose(info["trajectory"][ok, 0], info["start_distance"][ok], rtol=1e-6)
    np.testing.assert_allclose(info["trajectory"][ok, -1], r1.distance[ok], rtol=1e-5)
    assert np.any(r1.distance[ok] < 0.999 * info["start_distance"][ok])
    assert np.all(info["n_qp"][ok] > 0)
    assert r1.distance[3] == 0 and r1.success[3] and np.array_equal(r1.x_adv[3], x[3])


def test_dual_qp_equals_osqp_in_the_search():
    """The l2 search with robustjax.qp's exact QPs (the default) and with OSQP (the reference) ends at the same
    distances: the two solvers agree to OSQP's tolerance, so the searches take the same path."""
    layers = random_net(11, [10, 16, 16, 4])
    f = as_logits_fn(layers)
    x = np.random.default_rng(11).uniform(0.2, 0.8, size=(4, 10)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    a = region(f, x, labels, p=2, key=jax.random.key(2), n_regions=20)
    b = region(f, x, labels, p=2, key=jax.random.key(2), n_regions=20, qp_solver="osqp")
    check_valid(f, x, labels, a)
    np.testing.assert_allclose(a.distance, b.distance, rtol=1e-3)
    with pytest.raises(ValueError, match="qp_solver"):
        region(f, x, labels, p=2, key=jax.random.key(0), qp_solver="cvxopt")


@pytest.mark.parametrize("p", [2, 1])
def test_process_pool_equals_one_process(p):
    """processes=2 (spawned workers, logits_fn by cloudpickle) gives the one-process distances; the result
    is re-verified in the parent."""
    layers = random_net(5, [8, 12, 12, 3])
    f = as_logits_fn(layers)
    x = np.random.default_rng(5).uniform(0.2, 0.8, size=(5, 8)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    labels[4] = (labels[4] + 1) % 3
    xtr = np.random.default_rng(6).uniform(size=(50, 8)).astype(np.float32)
    one = region(f, x, labels, p=p, key=jax.random.key(1), n_regions=10, x_train=xtr)
    two = region(f, x, labels, p=p, key=jax.random.key(1), n_regions=10, x_train=xtr, processes=2)
    check_valid(f, x, labels, two)
    np.testing.assert_allclose(two.distance, one.distance, rtol=1e-5)
    np.testing.assert_allclose(two.info["start_distance"], one.info["start_distance"], rtol=1e-5)
    assert two.distance[4] == 0 and two.info["trajectory"].shape == one.info["trajectory"].shape


@pytest.mark.parametrize("p", P_ALL)
def test_halfspace_box_step_is_the_exact_minimum(p):
    """`halfspace_box_step` attains `halfspace_box_distance` and satisfies its constraints."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        w, x = rng.normal(size=12), rng.uniform(size=12)
        r = abs(rng.normal()) * rng.choice([0.3, 1.0, 3.0])
        d = halfspace_box_step(w, r, x, 0.0, 1.0, p)
        ref = float(halfspace_box_distance(jnp.asarray(w), r, jnp.asarray(x), 0.0, 1.0, p))
        if d is None:
            assert np.isinf(ref)
            continue
        assert w @ d >= r * (1 - 1e-9) and np.all(x + d >= -1e-12) and np.all(x + d <= 1 + 1e-12)
        np.testing.assert_allclose(np.linalg.norm(d, ord=p), ref, rtol=1e-5)


def test_many_seeds_never_invalid():
    """Random nets and points, all three norms, a small box: no invalid example is ever returned."""
    box = Box(0.1, 0.9)
    for seed in range(2):
        layers = random_net(seed + 10, [5, 10, 10, 4])
        f = as_logits_fn(layers)
        x = np.random.default_rng(seed).uniform(0.1, 0.9, size=(6, 5)).astype(np.float32)
        labels = np.argmax(verify.forward(layers, x), 1)
        for p in P_ALL:
            res = region(f, x, labels, p=p, key=jax.random.key(seed), box=box, n_regions=6)
            check_valid(f, x, labels, res, box)


def _pattern(g, z):
    return np.sign(np.asarray(g(jnp.asarray(z))[1]))


@pytest.mark.parametrize("p", P_ALL)
def test_per_example_boxes_equal_separate_runs(p):
    """A `[batch, d]` box (one per example) gives each example the result of running it alone with its own
    box; every point stays in its own box."""
    layers = random_net(11, [5, 10, 10, 4])
    f = as_logits_fn(layers)
    x = np.random.default_rng(2).uniform(0.3, 0.7, size=(3, 5)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    lo = np.stack([np.full(5, 0.0), np.full(5, 0.2), np.linspace(0.0, 0.25, 5)]).astype(np.float32)
    hi = np.stack([np.full(5, 1.0), np.full(5, 0.8), np.linspace(0.9, 0.75, 5)]).astype(np.float32)
    res = region(f, x, labels, p=p, key=jax.random.key(0), box=Box(lo, hi), n_regions=6, restarts=0)
    assert np.all(res.x_adv >= lo) and np.all(res.x_adv <= hi)
    for i in range(3):
        alone = region(f, x[i:i + 1], labels[i:i + 1], p=p, key=jax.random.key(0), box=Box(lo[i], hi[i]),
                       n_regions=6, restarts=0)
        np.testing.assert_allclose(alone.distance, res.distance[i:i + 1], rtol=1e-4)
    per_pixel = region(f, x, labels, p=p, key=jax.random.key(0), box=(lo[2], hi[2]), n_regions=6, restarts=0)
    assert np.all(per_pixel.x_adv >= lo[2]) and np.all(per_pixel.x_adv <= hi[2])


def test_empty_batch():
    f = as_logits_fn(random_net(0, [4, 6, 3]))
    res = region(f, np.zeros((0, 4), np.float32), np.zeros(0, np.int32), p=2, key=jax.random.key(0))
    assert res.x_adv.shape == (0, 4) and res.distance.shape == (0,) and res.info["trajectory"].shape == (0, 101)


def test_switch_tracer_conv_maxpool_region_is_affine():
    """LeNet-like net (conv, ReLU, max-pool, dense): inside the traced region of y, the logits equal the
    linearization at y; the region rows separate y from a point with another pattern."""
    m = models.build("lenet", features=(3, 4), hidden=12)
    v = models.init(m, jax.random.key(0), (1, 8, 8, 1))
    f = models.logits_fn(m, v)
    g = switch_fn(f, (8, 8, 1))
    y = jax.random.uniform(jax.random.key(1), (64,))
    out, sw = g(y)
    n_relu = 8 * 8 * 3 + 4 * 4 * 4 + 12
    n_pool = 4 * 4 * 3 * 4 + 2 * 2 * 4 * 4
    assert sw.shape == (n_relu + n_pool,)
    np.testing.assert_allclose(out, f(y.reshape(1, 8, 8, 1))[0], rtol=1e-5)
    jac = jax.jacrev(lambda t: g(t)[0])(y)
    rng = np.random.default_rng(0)
    inside = 0
    for scale in (1e-4, 1e-3, 1e-2, 1e-1):
        for _ in range(5):
            z = y + scale * jnp.asarray(rng.normal(size=64), jnp.float32)
            same = np.array_equal(_pattern(g, z)[_pattern(g, y) != 0], _pattern(g, y)[_pattern(g, y) != 0])
            lin = out + jac @ (z - y)
            if same:
                np.testing.assert_allclose(g(z)[0], lin, atol=1e-4)
                inside += 1
    assert inside >= 5


def test_preacts_fn_equals_traced_relu_switches():
    layers = random_net(0, [5, 7, 6, 3])
    f = as_logits_fn(layers)
    params = [(jnp.asarray(l.W, jnp.float32), jnp.asarray(l.b, jnp.float32))
              for l in layers if isinstance(l, verify.Dense)]

    def preacts(x):
        h, pre = x.reshape(x.shape[0], -1), []
        for W, b in params[:-1]:
            h = h @ W + b
            pre.append(h)
            h = jax.nn.relu(h)
        return pre
    y = jnp.linspace(0.0, 1.0, 5)
    np.testing.assert_allclose(switch_fn(f, (5,), preacts_fn=preacts)(y)[1], switch_fn(f, (5,))(y)[1], rtol=1e-6)
    x = np.random.default_rng(0).uniform(size=(2, 5)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    a = region(f, x, labels, p=2, key=jax.random.key(0), n_regions=8)
    b = region(f, x, labels, p=2, key=jax.random.key(0), n_regions=8, preacts_fn=preacts)
    np.testing.assert_allclose(a.distance, b.distance, rtol=1e-5)


def test_region_attack_on_trained_mnist_net(relu_mlp_mnist, mnist_small):
    """A trained 784-64-10 MNIST net: valid examples that lie on the decision boundary (0.1 % closer to x
    they are classified correctly), closer than DeepFool's on at least one point."""
    from robustjax.attacks import deepfool
    (xtr, ytr), (xte, yte) = mnist_small
    f = relu_mlp_mnist.logits_fn
    x, y = xte[:3], yte[:3]
    res = region(f, x, y, p=2, key=jax.random.key(0), n_regions=10, x_train=xtr[:2000], y_train=ytr[:2000])
    check_valid(f, x, y, res)
    assert np.all(res.success)
    inner = x + 0.999 * (res.x_adv - x)
    assert np.all(np.asarray(jnp.argmax(f(jnp.asarray(inner)), -1)) == y)
    df = deepfool(f, x, y, p=2, key=jax.random.key(0))
    assert np.all(res.distance <= df.distance * (1 + 1e-5)) and np.any(res.distance < 0.99 * df.distance)


def test_input_errors_and_warnings():
    layers = random_net(0, [4, 6, 3])
    f = as_logits_fn(layers)
    x = np.full((2, 4), 0.5, np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    with pytest.raises(ValueError, match="outside the box"):
        region(f, x + 1.0, labels, p=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        region(f, np.where(np.eye(2, 4) > 0, np.nan, x).astype(np.float32), labels, p=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="p must be"):
        region(f, x, labels, p=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        region(f, x, labels, p=2, key=None)
    with pytest.raises(ValueError, match="n_regions"):
        region(f, x, labels, p=2, key=jax.random.key(0), n_regions=-1)
    with pytest.raises(ValueError, match="box.lo has shape"):
        region(f, x, labels, p=2, key=jax.random.key(0), box=Box(np.zeros((3, 4)), 1.0))
    with pytest.raises(ValueError, match="lp_solver"):
        region(f, x, labels, p=1, key=jax.random.key(0), lp_solver="glpk")
    with pytest.raises(ValueError, match="restart_regions must be >= 0"):
        region(f, x, labels, p=2, key=jax.random.key(0), restarts=1, restart_regions=-3)
    with pytest.raises(ValueError, match=r"x_train must have x's 4 features per example, got shape \(3, 5\)"):
        region(f, x, labels, p=2, key=jax.random.key(0), x_train=np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"y_train must lie in \[0, 3\)"):
        region(f, x, labels, p=2, key=jax.random.key(0), x_train=np.zeros((3, 4), np.float32), y_train=[0, 1, 9])
    with pytest.raises(ValueError, match="y_train needs x_train"):
        region(f, x, labels, p=2, key=jax.random.key(0), y_train=[0, 1, 2])
    with pytest.raises(ValueError, match="piecewise-affine"):
        region(lambda z: jnp.tanh(f(z)), x, labels, p=2, key=jax.random.key(0), n_regions=2)
    with pytest.warns(UserWarning, match="probabilities"), pytest.raises(ValueError, match="reduce_max"):
        region(lambda z: jax.nn.softmax(f(z)), x, labels, p=2, key=jax.random.key(0), n_regions=2)


@pytest.mark.parametrize("p", P_ALL)
def test_never_worse_than_its_cheap_starts(p):
    """Per example, the region distance is <= the l_p distance of each cheap attack's point it starts from
    (DeepFool, DDN and minimal PGD, run with the keys the attack gives them), even with a search too short
    to improve on them."""
    layers = random_net(21, [12, 24, 16, 4])
    f = as_logits_fn(layers)
    x = np.random.default_rng(21).uniform(0.2, 0.8, size=(5, 12)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    key = jax.random.key(7)
    res = region(f, x, labels, p=p, key=key, n_regions=2, restarts=0)
    check_valid(f, x, labels, res)
    cheap = cheap_attacks(f, x, labels, p=p, key=jax.random.split(key)[0], box=Box(np.zeros_like(x), np.ones_like(x)))
    assert [r.method for r in cheap] == ["deepfool_l2" if p == 1 else f"deepfool_l{'inf' if p == np.inf else 2}",
                                         "ddn_l2", f"pgd_minimal_l{'inf' if p == np.inf else int(p)}"]
    for r in cheap:                             # their points' distances in l_p, as finalize measures them
        d = np.where(r.success & (r.distance > 0), np.asarray(lp_norm(jnp.asarray(r.x_adv - x), p)), np.inf)
        assert np.all(res.distance <= d), (r.method, res.distance, d)


def test_small_random_nets_within_five_percent_of_exact():
    """The small version of benchmarks/bench_region_small.py: fresh random nets (10-12 inputs, one or two
    hidden layers of 16 ReLUs, 3-4 classes), default settings: exact <= region <= 1.05 exact in l_inf, l1
    (MILP) and l2 (outer-approximation MILP), every returned point valid."""
    bench = load_benchmark("bench_region_small")
    compared = 0
    for seed, sizes in [(31, [10, 16, 3]), (32, [12, 16, 16, 4])]:
        layers = random_net(seed, sizes)
        f = as_logits_fn(layers)
        x = np.random.default_rng(seed).uniform(0.2, 0.8, size=(2, sizes[0])).astype(np.float32)
        labels = np.argmax(verify.forward(layers, x), 1)
        for p in P_ALL:
            res = region(f, x, labels, p=p, key=jax.random.key(seed))
            check_valid(f, x, labels, res)
            for i in range(len(x)):
                assert res.success[i] and bench.check_point(layers, x[i], int(labels[i]), res.x_adv[i],
                                                            float(res.distance[i]), p)
                if p == 2:   # the OA reference, proved optimal to 1e-3 on the one-layer net; on the two-layer
                    ex = bench.min_adversarial_l2(layers, x[i], int(labels[i]), upper=res.x_adv[i], time_limit=30)
                    assert ex["status"] == "optimal" or len(sizes) > 3   # net at least its best point if stopped
                    exact = ex["distance"]
                else:
                    ex = verify.min_adversarial_milp(layers, x[i], int(labels[i]), p=p, time_limit=30,
                                                     max_distance=1.001 * res.distance[i])
                    assert ex.status == "optimal"
                    exact = ex.distance
                assert exact * (1 - 2e-3) <= res.distance[i] <= 1.05 * exact, (seed, p, i, res.distance[i], exact)
                compared += 1
    assert compared == 12


def _snapshot_checks(f, x, labels, res, box=Box()):
    """Every recorded point: at the trajectory's distance for its step, non-increasing over the steps,
    adversarial (argmax re-checked with the model), inside the box; x for misclassified inputs."""
    S, steps, traj = res.info["snapshots"], res.info["snapshot_regions"], res.info["trajectory"]
    n, m = steps.shape
    assert S.shape == (n, m) + x.shape[1:] and S.dtype == np.float32
    wrong = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1)) != labels
    for i in range(n):
        if wrong[i]:
            assert np.array_equal(S[i], np.broadcast_to(x[i], S[i].shape)) and np.all(traj[i] == 0)
            continue
        none = ~np.isfinite(traj[i, steps[i]])        # no start: no point yet
        assert np.all(np.isnan(S[i][none]))
        assert np.all(np.isfinite(S[i][~none]))
        if none.all():
            continue
        z = S[i][~none]
        d = np.linalg.norm(z.reshape(len(z), -1).astype(np.float64) - x[i].reshape(-1), ord=res.p, axis=1)
        np.testing.assert_allclose(d, traj[i, steps[i]][~none], rtol=1e-5, atol=1e-7)
        assert np.all(np.diff(d) <= 1e-6 * d[0])
        pred = np.asarray(jnp.argmax(f(jnp.asarray(z)), -1))
        assert np.all(pred != labels[i])
        assert np.all(z >= np.asarray(box.lo)) and np.all(z <= np.asarray(box.hi))


@pytest.mark.parametrize("p", [2, np.inf])
def test_snapshots_follow_the_trajectory(p):
    """snapshots=(...) records the best point after those region counts (sorted, duplicates dropped, counts
    inside a round of batch_regions too): each at the trajectory's distance for its step, non-increasing,
    adversarial, in the box; x for a misclassified input; the attack itself is unchanged (the same distances,
    trajectory and points as without snapshots)."""
    layers = random_net(21, [12, 24, 16, 4])
    f = as_logits_fn(layers)
    x = np.random.default_rng(21).uniform(0.2, 0.8, size=(4, 12)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    labels[3] = (labels[3] + 1) % 4
    kw = dict(p=p, key=jax.random.key(4), n_regions=12, batch_regions=5)
    plain = region(f, x, labels, **kw)
    res = region(f, x, labels, snapshots=(7, 1, 12, 3, 3), **kw)
    assert "snapshots" not in plain.info
    np.testing.assert_array_equal(res.info["snapshot_regions"], np.tile([1, 3, 7, 12], (4, 1)))
    np.testing.assert_array_equal(res.distance, plain.distance)
    np.testing.assert_array_equal(res.x_adv, plain.x_adv)
    np.testing.assert_array_equal(res.info["trajectory"], plain.info["trajectory"])
    _snapshot_checks(f, x, labels, res)
    ok = res.success & (res.distance > 0)
    assert ok.sum() == 3
    # the last column (n_regions) is the point x_adv is made from: at the returned distance up to finalize's push
    np.testing.assert_allclose(res.info["trajectory"][ok, -1], res.distance[ok], rtol=1e-3)


def test_snapshots_process_pool_equals_one_process():
    """processes=2: the snapshot rows come back from the workers in order, equal to the one-process run."""
    layers = random_net(3, [8, 12, 12, 3])
    f = as_logits_fn(layers)
    x = np.random.default_rng(5).uniform(0.2, 0.8, size=(5, 8)).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x), 1)
    labels[4] = (labels[4] + 1) % 3
    kw = dict(p=2, key=jax.random.key(1), n_regions=10, snapshots=(1, 4, 10))
    one = region(f, x, labels, **kw)
    two = region(f, x, labels, processes=2, **kw)
    _snapshot_checks(f, x, labels, two)
    np.testing.assert_array_equal(two.info["snapshot_regions"], one.info["snapshot_regions"])
    np.testing.assert_allclose(two.info["snapshots"], one.info["snapshots"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.info["trajectory"], one.info["trajectory"], rtol=1e-5)
    assert np.all(np.isfinite(two.info["snapshots"][:4])) and two.distance[4] == 0


def test_snapshots_input_errors():
    f = as_logits_fn(random_net(0, [4, 6, 3]))
    x = np.full((2, 4), 0.5, np.float32)
    labels = np.zeros(2, np.int32)
    for bad in [(0,), (11,), (1.5,), (True,), ("3",), 3, (-1, 2)]:
        with pytest.raises(ValueError, match="snapshots"):
            region(f, x, labels, p=2, key=jax.random.key(0), n_regions=10, snapshots=bad)
    with pytest.raises(ValueError, match="snapshots"):
        region(f, x, labels, p=2, key=jax.random.key(0), n_regions=0, snapshots=(1,))
    empty = region(f, x[:0], labels[:0], p=2, key=jax.random.key(0), n_regions=4, snapshots=(2, 4))
    assert empty.info["snapshots"].shape == (0, 2, 4) and empty.info["snapshot_regions"].shape == (0, 2)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_plot_attack_in_action(shape):
    """The figure for a gray and a color input (a random ReLU MLP on the flattened image): the curve and
    2 * steps + 3 image axes (original, each step, final; a perturbation under each point); errors name the
    problem."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from robustjax.attacks import plot_attack_in_action
    d = int(np.prod(shape))
    layers = random_net(7, [d, 16, 4])
    f = as_logits_fn(layers)
    x = np.random.default_rng(7).uniform(0.3, 0.7, size=(2,) + shape).astype(np.float32)
    labels = np.argmax(verify.forward(layers, x.reshape(2, -1)), 1)
    res = region(f, x, labels, p=2, key=jax.random.key(0), n_regions=4, batch_regions=2, restarts=0,
                 snapshots=(1, 2, 4))
    assert res.info["snapshots"].shape == (2, 3) + shape
    _snapshot_checks(f, x, labels, res)
    for steps, m in ((None, 3), ((1, 4), 2)):
        fig = plot_attack_in_action(x, res, index=1, steps=steps, labels=labels)
        images = [a for a in fig.axes if a.images]
        assert len(images) == 2 * m + 3 and len(fig.axes) == 2 * m + 5   # + the curve and the scale note
        assert len(fig.axes[0].lines) >= 2 and not fig.axes[0].images
        plt.close(fig)
    with pytest.raises(ValueError, match="not recorded"):
        plot_attack_in_action(x, res, steps=(3,))
    with pytest.raises(ValueError, match="snapshots"):
        plot_attack_in_action(x, region(f, x, labels, p=2, key=jax.random.key(0), n_regions=2, restarts=0))
