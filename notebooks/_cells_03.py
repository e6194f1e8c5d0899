NAME = "03_attacks_and_p_norms"
CELLS = [
("md", r"""
# 03 Attacks: minimal adversarial perturbations in l1, l2 and l_inf

The adversarial problem of the talk:
$$\min_\delta \|\delta\|_p \quad\text{s.t.}\quad \max_{l\ne c} f_l(x+\delta)\ge f_c(x+\delta),\quad x+\delta\in[0,1]^d .$$

Every attack in `robustjax.attacks` has one call shape,
`attack(logits_fn, x, labels, *, p, key, box) -> AttackResult`, one row per example: `x_adv`,
`distance`, `success` (re-checked with the model after clipping to the box), `label_adv`,
`model_calls`, `time_s`. Misclassified inputs have distance 0; a failure has distance inf.
"""),
("code", r"""
import os
SMALL = os.environ.get("ROBUSTJAX_SMALL") == "1"      # the tests set this: a tiny run
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from robustjax import attacks, data, train
from robustjax.attacks import region

(xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
cfg = train.TrainConfig(model="mlp", model_config={"widths": (256 if SMALL else 1024,), "act": "relu"},
                        optimizer="adam", learning_rate=1e-3, schedule="piecewise", epochs=1 if SMALL else 3,
                        train_size=10000 if SMALL else 60000, progress=False)
state = train.fit(cfg, (xtr, ytr))
f = state.logits_fn()                       # one function object: the jitted attacks compile once
print("test accuracy:", train.evaluate(state, xte, yte)["accuracy"])
n = 8 if SMALL else 100
x, y = xte[:n], yte[:n]
key = jax.random.key(0)
"""),
("md", r"""
## The choice of p changes what an adversarial example looks like

The minimal $\ell_1$ perturbation changes few pixels a lot, $\ell_\infty$ changes every pixel a
little, $\ell_2$ sits in between (the talk's slide).
"""),
("code", r"""
by_norm = {
    1: attacks.pgd_minimal(f, x, y, p=1, key=key),
    2: attacks.best_of([attacks.deepfool(f, x, y, p=2), attacks.ddn(f, x, y, p=2, key=key)]),
    np.inf: attacks.pgd_minimal(f, x, y, p=np.inf, key=key),
}
for p, r in by_norm.items():
    print(f"p = {p}: success {np.mean(r.success):.2f}, median distance {np.median(r.distance):.4f}")
fig = attacks.plot_adversarial_examples(x, y, list(by_norm.values()), indices=[int(np.argmax(by_norm[2].distance > 0))])
plt.show()
"""),
("md", r"""
## The randomized region attack in action

A ReLU network is affine on each linear region, so on a region the adversarial problem is convex: a QP
for $p=2$, an LP for $p=1,\infty$. The attack samples points near the best adversarial point so far,
takes the linear region there (the constraints of many samples in one `jax.vmap`), solves the convex
problem with OSQP handing it only the constraints that can bind, and keeps the closest point. The
trajectory shows the distance shrinking as regions are sampled, as on the talk's slide.
"""),
("code", r"""
m = 3 if SMALL else 10
res = region(f, x[:m], y[:m], p=2, key=key, n_regions=10 if SMALL else 100)
fig, ax = plt.subplots(figsize=(6, 3.5))
for i in range(m):
    t = res.info["trajectory"][i]
    if np.isfinite(t[0]) and t[0] > 0:
        ax.plot(np.arange(len(t)), t / t[0], alpha=0.7)
ax.set_xlabel("regions sampled"); ax.set_ylabel("best l2 distance / distance at the start")
ax.set_title("region attack: distance shrinking as regions are sampled"); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()
print("region attack median l2:", np.median(res.distance), "| DeepFool median l2:",
      np.median(attacks.deepfool(f, x[:m], y[:m], p=2).distance))
"""),
("md", r"""
## Robust accuracy against epsilon, and the per-example best of several attacks

From the per-example distances, robust accuracy at radius $\epsilon$ is the fraction with distance
$> \epsilon$. No single attack is best everywhere: `best_of` takes the per-example minimum.
"""),
("code", r"""
runs = {
    "deepfool": attacks.deepfool(f, x, y, p=2),
    "cw": attacks.cw(f, x, y, p=2, key=key, steps=200 if SMALL else 1000, learning_rate=0.1),
    "ddn": attacks.ddn(f, x, y, p=2, key=key),
}
runs["best of all"] = attacks.best_of(list(runs.values()))
attacks.plot_robust_accuracy(runs); plt.show()
for name, r in runs.items():
    print(f"{name:12s} median {np.median(r.distance):.4f}  success {np.mean(r.success):.2f}  "
          f"time/example {1e3 * np.mean(r.time_s):.1f} ms")
"""),
("md", r"""
## Exact answers on a small network

For small ReLU networks the true minimal $\ell_\infty$ (and $\ell_1$) distance is a MILP
(`robustjax.verify`, HiGHS with big-M from interval bounds). Attacks give upper bounds, the MILP the
exact value; the region attack should be close to it and never below.
"""),
("code", r"""
from robustjax import models, verify
small = train.fit(train.TrainConfig(model="mlp", model_config={"widths": (8 if SMALL else 16,), "act": "relu"}, optimizer="adam",
                  learning_rate=3e-3, schedule="constant", epochs=1, train_size=5000, progress=False), (xtr, ytr))
fs = small.logits_fn()
k = 1 if SMALL else 5
exact = [verify.min_adversarial_milp(verify.dense_layers(small.variables()), x[i], int(y[i]), p=np.inf, time_limit=60)
         for i in range(k)]
reg = region(fs, x[:k], y[:k], p=np.inf, key=key, n_regions=10 if SMALL else 50)
for i in range(k):
    print(f"point {i}: MILP {exact[i].status} {exact[i].distance:.5f}   region attack {reg.distance[i]:.5f}")
"""),
]
