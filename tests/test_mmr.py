"""MMR regularizer: distances against float64 references (an explicit numpy region map for an MLP, the network
package's region_map for a CNN), the term's formula and arguments, finite gradients, a toy problem where
training on the term lowers it, and training through robustjax.train with a config naming "mmr"."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import models, network, regularizers, train

INF = float("inf")


def _distances(f, p):
    """Jitted mmr_distances for apply_fn f (eager evaluation of the read jaxpr dispatches op by op)."""
    return jax.jit(lambda params, x, y: regularizers.mmr_distances(params, x, y, apply_fn=f, p=p))


def _net(name, shape, dtype=jnp.float64, scale=1.0, **kw):
    m = models.build(name, **kw)
    v = models.init(m, jax.random.key(0), (1,) + shape)
    p = jax.tree.map(lambda a: scale * a.astype(dtype), v["params"])
    return m, p, lambda q, x: m.apply({"params": q}, x)


def _mlp_reference(p, x, y, q):
    """Distances by the explicit affine map of each example's region (float64 numpy)."""
    Ws = [np.asarray(p[f"dense_{i}"]["kernel"]) for i in range(len(p) - 1)] + [np.asarray(p["out"]["kernel"])]
    bs = [np.asarray(p[f"dense_{i}"]["bias"]) for i in range(len(p) - 1)] + [np.asarray(p["out"]["bias"])]
    d_b, d_d = [], []
    for xi, yi in zip(np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y)):
        A, c, rows = np.eye(xi.size), np.zeros(xi.size), []          # input = xi @ A + c on the region
        for W, b in zip(Ws[:-1], bs[:-1]):
            A, c = A @ W, c @ W + b
            z = xi @ A + c
            rows.append(np.abs(z) / np.linalg.norm(A, q, axis=0))
            A, c = A * (z > 0), c * (z > 0)
        F, f0 = A @ Ws[-1], c @ Ws[-1] + bs[-1]
        f = xi @ F + f0
        with np.errstate(invalid="ignore"):                              # 0 / 0 at the true class
            dd = (f[yi] - f) / np.linalg.norm(F[:, [yi]] - F, q, axis=0)
        dd[yi] = np.inf
        d_b.append(np.concatenate(rows))
        d_d.append(dd)
    return np.array(d_b), np.array(d_d)


@pytest.mark.parametrize("p", [INF, 2.0, 1.0])
def test_mlp_distances_equal_explicit_region_map(p):
    q = {INF: 1, 2.0: 2, 1.0: np.inf}[p]
    with jax.enable_x64(True):
        m, params, f = _net("mlp", (2, 3), widths=(7, 5), num_classes=4)
        x = jax.random.normal(jax.random.key(1), (6, 2, 3), jnp.float64)
        y = jnp.array([0, 1, 2, 3, 0, 1])
        logits, zs = regularizers.preactivations(f, params, x)
        np.testing.assert_allclose(logits, f(params, x), rtol=1e-12)
        assert [z.shape for z in zs] == [(6, 7), (6, 5)]
        d_b, d_d = _distances(f, p)(params, x, y)
        assert d_b.shape == (6, 12) and d_d.shape == (6, 4)
        ref_b, ref_d = _mlp_reference(params, x, y, q)
        np.testing.assert_allclose(d_b, ref_b, rtol=1e-10)
        np.testing.assert_allclose(d_d, ref_d, rtol=1e-10)


def test_cnn_distances_equal_network_region_map():
    """The generic path on the MMR CNN (convs with stride 2, flatten, dense): against the traced graph's
    float64 region map (switch order = ReLU order)."""
    with jax.enable_x64(True):
        m, params, f = _net("mmr_cnn", (8, 8, 1), num_classes=3)
        x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 1), jnp.float64)
        y = jnp.array([0, 2])
        d_b, d_d = _distances(f, INF)(params, x, y)
        graph = network.trace(lambda xx: f(params, xx), (8, 8, 1), dtype=jnp.float64)
        for i in range(2):
            r = network.region_map(graph, x[i])
            s = np.asarray(x[i]).reshape(-1) @ r.S + r.s0
            np.testing.assert_allclose(d_b[i], np.abs(s) / np.abs(r.S).sum(0), rtol=1e-9)
            fx = np.asarray(x[i]).reshape(-1) @ r.F + r.f0
            yi = int(y[i])
            with np.errstate(invalid="ignore"):
                ref = (fx[yi] - fx) / np.abs(r.F[:, [yi]] - r.F).sum(0)
            ref[yi] = np.inf
            np.testing.assert_allclose(d_d[i], ref, rtol=1e-9)


def test_term_is_the_hinge_of_the_smallest_distances():
    m, params, f = _net("mlp", (4,), dtype=jnp.float32, widths=(10,), num_classes=3)
    x = jax.random.normal(jax.random.key(3), (5, 4))
    y = jnp.array([0, 1, 2, 0, 1])
    d_b, d_d = map(np.asarray, _distances(f, 2)(params, x, y))
    gb, gd, kb, kd = 0.7, 0.4, 3, 2
    want = np.mean(np.sum(np.maximum(0, 1 - np.sort(d_b, 1)[:, :kb] / gb), 1) / kb) \
        + np.mean(np.sum(np.maximum(0, 1 - np.sort(d_d, 1)[:, :kd] / gd), 1) / kd)
    term = regularizers.from_spec([("mmr", 2.0, {"p": 2, "gamma_boundary": gb, "gamma_decision": gd,
                                                  "k_boundary": kb, "k_decision": kd})])
    got = jax.jit(lambda q: term(q, x, y, apply_fn=f, key=jax.random.key(0)))(params)
    np.testing.assert_allclose(got, 2.0 * want, rtol=1e-5)
    # a fraction of the 10 hidden units: 0.3 -> 3 of them; k_decision None -> K (the true class adds 0)
    frac = regularizers.mmr(2.0, p=2, gamma_boundary=gb, gamma_decision=gd, k_boundary=0.3)
    want_k = np.mean(np.sum(np.maximum(0, 1 - np.sort(d_b, 1)[:, :3] / gb), 1) / 3) \
        + np.mean(np.sum(np.maximum(0, 1 - np.sort(d_d, 1) / gd), 1) / 3)
    np.testing.assert_allclose(jax.jit(lambda q: frac(q, x, y, apply_fn=f, key=None))(params), 2.0 * want_k,
                               rtol=1e-5)


@pytest.mark.parametrize("kw", [{"p": 3}, {"gamma_boundary": 0.0}, {"k_boundary": 0}, {"k_boundary": 1.5},
                                {"k_boundary": True}, {"k_decision": -1}])
def test_bad_arguments_are_refused(kw):
    with pytest.raises(ValueError):
        regularizers.mmr(1.0, **kw)


def test_gradient_is_finite_with_dead_units(p=2.0):
    """A hidden unit with zero weights has no hyperplane (distance +inf) and a zero gradient norm; the l2
    norm's square root must not give NaN there."""
    m, params, f = _net("mlp", (3,), dtype=jnp.float32, widths=(6, 6), num_classes=3)
    params["dense_0"]["kernel"] = params["dense_0"]["kernel"].at[:, 0].set(0.0)
    params["dense_1"]["kernel"] = params["dense_1"]["kernel"].at[:, 1].set(0.0)
    x = jax.random.normal(jax.random.key(4), (8, 3))
    y = jnp.arange(8) % 3
    d_b, _ = _distances(f, p)(params, x, y)
    assert np.all(np.isinf(np.asarray(d_b)[:, [0, 7]]))
    term = regularizers.mmr(1.0, p=p, k_boundary=12)
    val, g = jax.jit(jax.value_and_grad(lambda q: term(q, x, y, apply_fn=f, key=None)))(params)
    assert np.isfinite(float(val))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))


def test_training_on_the_term_widens_the_margins():
    """Toy 2-d, 3-class problem: 60 Adam steps on MMR alone lower it and push the points away from their
    region and decision boundaries."""
    m, params, f = _net("mlp", (2,), dtype=jnp.float32, widths=(16,), num_classes=3)
    y = jnp.arange(60) % 3
    centers = jnp.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = centers[y] + 0.3 * jax.random.normal(jax.random.key(5), (60, 2))
    term = regularizers.mmr(1.0, p=INF, gamma_boundary=0.5, gamma_decision=0.5, k_boundary=4)
    reg = jax.jit(lambda q: term(q, x, y, apply_fn=f, key=None))
    opt = optax.adam(1e-2)

    @jax.jit
    def step(q, s):
        g = jax.grad(lambda r: reg(r) + jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f(r, x), y)))(q)
        u, s = opt.update(g, s, q)
        return optax.apply_updates(q, u), s

    state, before = opt.init(params), float(reg(params))
    for _ in range(60):
        params, state = step(params, state)
    after = float(reg(params))
    assert after < 0.5 * before, (before, after)


def test_fit_with_a_config_naming_mmr():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 6, 6, 1)).astype(np.float32)
    y = (x.reshape(256, -1).mean(1) > 0.5).astype(np.int32)
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (16, 8)}, optimizer="adam", learning_rate=1e-3,
                            schedule="constant", epochs=2, batch_size=64, progress=False,
                            regularizers=(("mmr", 0.5, {"p": INF, "gamma_boundary": 0.1, "gamma_decision": 0.1,
                                                        "k_boundary": 0.1}),))
    records = []
    state = train.fit(cfg, (x, y), (x[:64], y[:64]), num_classes=2, log=records.append)
    assert int(state.step) == 8
    assert len(records) == 2 and all(np.isfinite(r["train_regularizer"]) and r["train_regularizer"] > 0 for r in records)
