NAME = "02_formal_guarantees"
CELLS = [
("md", r"""
# 02 Formal guarantees: Theorem 2.1 and cross-Lipschitz regularization

*For safety-critical use we need not just more robust methods, we need formal guarantees that the
learned system is robust.* (the talk)

**Theorem 2.1 (Hein & Andriushchenko, NIPS 2017).** Let $f:\mathbb{R}^d\to\mathbb{R}^K$ have $C^1$
components and $c=\arg\max_j f_j(x)$. The class does not change for any $\|\delta\|_2\le R^*$ with

$$R^* = \max_{R>0}\ \min\Big\{\min_{j\ne c}\frac{f_c(x)-f_j(x)}{\max_{y\in B_2(x,R)}\|\nabla f_c(y)-\nabla f_j(y)\|_2},\ R\Big\}.$$

`robustjax.certify.certified_radius` evaluates it in closed form for one-hidden-layer networks with a
smooth activation, Gaussian kernel machines and linear models; the denominator motivates the
cross-Lipschitz regularizer
$\Omega(f)=\frac{1}{nK^2}\sum_i\sum_{l,m}\|\nabla f_l(x_i)-\nabla f_m(x_i)\|_2^2$.
"""),
("code", r"""
import os
SMALL = os.environ.get("ROBUSTJAX_SMALL") == "1"      # the tests set this: a tiny run
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from robustjax import certify, data, regularizers, train
from robustjax.attacks.linearized import linearized

(xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
hidden = 128 if SMALL else 1024
n_eval = 100 if SMALL else 1000
base = train.TrainConfig(model="one_hidden_layer", model_config={"hidden": hidden}, momentum=0.9,
                         learning_rate=0.05, epochs=1 if SMALL else 5,
                         train_size=5000 if SMALL else 60000, progress=False)
print(base)
"""),
("md", r"""
## Four ways to train the same network

No regularization, weight decay, dropout (keep 0.9 on the input, 0.5 on the hidden layer, as in the
paper's code), and cross-Lipschitz (the term plugs into the same training loop; for this network it
picks the exact closed form or `jax.jacrev`, whichever is cheaper for the batch).
"""),
("code", r"""
variants = {
    "none": (base, None),
    "weight decay": (base.replace(regularizers=(("weight_decay", 1e-4),)), None),
    "dropout": (base.replace(model_config={"hidden": hidden, "dropout_input": 0.1, "dropout_hidden": 0.5}), None),
    "cross-Lipschitz": (base, regularizers.cross_lipschitz(0.01 if SMALL else 0.1, structure="one_hidden_layer", alpha=10.0)),
}
trained = {}
for name, (cfg, term) in variants.items():
    state = train.fit(cfg, (xtr, ytr), regularizer=term)
    model = train.build_model(cfg, 10)
    trained[name] = (state, model.weights(state.variables()))
    print(f"{name:16s} test accuracy {train.evaluate(state, xte, yte)['accuracy']:.4f}")
"""),
("md", r"""
## Certified radius against the adversarial distance an attack finds

Per test point: the certified radius (a lower bound on the minimal adversarial $\ell_2$ distance) and
the distance of the authors' linearized attack (an upper bound). Every certificate must lie below
every attack distance: `certified <= true minimum <= attack`.
"""),
("code", r"""
x, y = xte[:n_eval], yte[:n_eval]
rows = {}
for name, (state, weights) in trained.items():
    cert = certify.certified_radius(weights, x, y)
    adv = linearized(state.logits_fn(), x, y, p=2)
    ok = ~cert.misclassified & adv.success & (adv.distance > 0)
    assert np.all(cert.radius[ok] <= adv.distance[ok] + 1e-6), "a certificate above an attack distance"
    rows[name] = dict(test_error=float(np.mean(cert.misclassified)), mean_radius=float(np.mean(cert.radius)),
                      median_radius=float(np.median(cert.radius)),
                      mean_attack=float(np.mean(adv.distance[ok])), tightness=float(np.median(cert.radius[ok] / adv.distance[ok])))
for name, r in rows.items():
    print(f"{name:16s}", "  ".join(f"{k} {v:.4f}" for k, v in r.items()))
"""),
("code", r"""
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for name, r in rows.items():
    axes[0].scatter(r["test_error"], r["mean_radius"], label=name, s=60)
    axes[1].scatter(r["test_error"], r["mean_attack"], label=name, s=60)
axes[0].set_ylabel("mean certified l2 radius"); axes[1].set_ylabel("mean l2 norm of the attack")
for ax in axes:
    ax.set_xlabel("test error (evaluated points)"); ax.grid(alpha=0.3)
axes[0].legend(); plt.tight_layout(); plt.show()
"""),
("md", r"""
## Trying to break a certificate

Sample points on the sphere of the certified radius around $x$ and run PGD confined to that ball: the
class must never change. (The test suite does this on many random nets and on trained ones.)
"""),
("code", r"""
from robustjax.attacks import Box, pgd
state, weights = trained["cross-Lipschitz"]
f = state.logits_fn()
cert = certify.certified_radius(weights, x, y)
keep = ~cert.misclassified & (cert.radius > 0)
xs, ys, rs = x[keep], y[keep], cert.radius[keep]
res = pgd(f, xs, ys, p=2, eps=rs, steps=50, restarts=3, key=jax.random.key(0), box=Box(-1e9, 1e9))
broken = int(np.sum(res.success))
print(f"PGD (3 restarts x 50 steps) inside the certified balls broke {broken} of {len(xs)} certificates (must be 0)")
assert broken == 0
"""),
("md", r"""
The full comparison over a range of $\lambda$ at a stated reduced scale, the kernel machine, CIFAR-10
and the speed of the regularizer are in `benchmarks/` and `scripts/cross_lipschitz.py`.
"""),
]
