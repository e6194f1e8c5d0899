NAME = "04_far_from_the_data"
CELLS = [
("md", r"""
# 04 Far from the data: why ReLU networks are overconfident, and CEDA / ACET

The talk's outlook: *low confidence far away from the training data*. Hein, Andriushchenko and
Bitterwolf (CVPR 2019) prove why ReLU networks fail at it:

**Theorem 3.1.** A ReLU network is piecewise affine, $f(x) = V^l x + a^l$ on finitely many regions
$Q_l$. If no $V^l$ has identical rows, then for almost every $x$ there is a class $k$ with
$\lim_{\alpha\to\infty} \mathrm{softmax}_k(f(\alpha x)) = 1$.

The ray $\alpha x$ ends in one unbounded region, where the logits grow linearly in $\alpha$ and the
softmax saturates. This notebook measures it, then trains the same net with CEDA (noise half of each
batch, low confidence enforced on it) and ACET (the worst case in an $\ell_\infty$ ball around the
noise) and compares.
"""),
("code", r"""
import os
SMALL = os.environ.get("ROBUSTJAX_SMALL") == "1"      # the tests set this: a tiny run
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from robustjax import data, train, ood
from robustjax.attacks import Box

(xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
n_train = 3000 if SMALL else 30000
n_eval = 300 if SMALL else 2000
base = train.TrainConfig(model="mlp", model_config={"widths": (128, 128), "act": "relu"}, optimizer="adam",
                         learning_rate=1e-3, schedule="piecewise", epochs=1 if SMALL else 3,
                         train_size=n_train, progress=False)
plain = train.fit(base, (xtr, ytr), (xte, yte))
f_plain = plain.logits_fn()
print("plain test accuracy:", train.evaluate(plain, xte, yte)["accuracy"])
"""),
("md", r"""
## Confidence on $\alpha x$

For test images and for uniform noise, the mean maximal confidence as the input is scaled up. The
theorem says it tends to 1; clipping $\alpha x$ back to the image box $[0,1]^d$ (right) shows that the
effect is not only an artefact of leaving the box.
"""),
("code", r"""
alphas = np.array([1, 2, 5, 10, 20, 50, 100, 1e3, 1e4, 1e6])
key = jax.random.key(0)
noise = np.asarray(ood.uniform_noise(key, jnp.asarray(xte[:n_eval])))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, project in zip(axes, (False, True)):
    for name, x in (("test images", xte[:n_eval]), ("uniform noise", noise)):
        conf = ood.scaled_confidence(f_plain, x, alphas, project=project)
        ax.semilogx(alphas, conf.mean(axis=1), marker="o", label=name)
    ax.set_xlabel("alpha"); ax.set_ylabel("mean max confidence")
    ax.set_title("clip(alpha x) to [0, 1]" if project else "alpha x"); ax.grid(alpha=0.3); ax.legend()
plt.tight_layout(); plt.show()
alpha_star = ood.alpha_for_confidence(f_plain, noise[:100])
print("median alpha at which uniform noise reaches 99.9 % confidence:", np.median(alpha_star))
"""),
("md", r"""
## Out-of-distribution detection by confidence

Mean maximal confidence (MMC) on each out-distribution set, and how well the confidence separates
the test set (positives) from it: AUROC and the false-positive rate at 95 % true-positive rate.
"""),
("code", r"""
def ood_table(logits_fn, key):
    k1, k2, k3 = jax.random.split(key, 3)
    x_in = jnp.asarray(xte[:n_eval])
    sets = {"uniform": ood.uniform_noise(k1, x_in), "permuted": ood.permuted_pixels(k2, x_in),
            "lowpass": ood.lowpass_noise(k3, x_in)}
    sets["adversarial"] = ood.adversarial_noise(logits_fn, sets["lowpass"], k3, eps=0.3,
                                                steps=10 if SMALL else 40, step_size=0.05 if SMALL else None)
    lc_in = ood.max_log_confidence(logits_fn, x_in)
    rows = {"test (MMC)": {"mmc": float(np.mean(np.exp(lc_in)))}}
    for name, z in sets.items():
        rows[name] = ood.ood_metrics(lc_in, ood.max_log_confidence(logits_fn, np.asarray(z)))
    return rows

def show(rows):
    for name, r in rows.items():
        print(f"{name:12s}", "  ".join(f"{k} {v:.3f}" for k, v in r.items()))

show(ood_table(f_plain, jax.random.key(1)))
"""),
("md", r"""
## Training with CEDA and ACET

Both are regularizer terms `term(params, x, y, *, apply_fn, key)`, with `apply_fn(params, x) -> logits`:
they generate one noise image per clean image inside the training step and add the mean of
$\log \max_k p_k$ on it (ACET on the worst case found by sign-PGD in an $\ell_\infty$ ball of radius 0.3
around the noise).
"""),
("code", r"""
results = {"plain": (plain, f_plain)}
for name, term in (("ceda", ood.ceda(1.0)), ("acet", ood.acet(1.0, eps=0.3, steps=3 if SMALL else 5, step_size=0.15))):
    st = train.fit(base, (xtr, ytr), (xte, yte), regularizer=term)
    results[name] = (st, st.logits_fn())
for name, (st, f) in results.items():
    print(f"--- {name}: test accuracy {train.evaluate(st, xte, yte)['accuracy']:.4f}")
    show(ood_table(f, jax.random.key(1)))
"""),
("code", r"""
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, (st, f) in results.items():
    conf = ood.scaled_confidence(f, noise, alphas)
    ax.semilogx(alphas, conf.mean(axis=1), marker="o", label=name)
ax.set_xlabel("alpha"); ax.set_ylabel("mean max confidence on alpha * noise"); ax.grid(alpha=0.3); ax.legend()
plt.tight_layout(); plt.show()
"""),
("md", r"""
What to look for: CEDA and ACET keep the test accuracy and lower the confidence on noise; ACET also on
adversarial noise, where CEDA stays near 1. Far out along $\alpha x$ every ReLU net, also the trained
ones, tends to confidence 1 again, as Theorem 3.1 says: training on noise in the box cannot change the
asymptotics (the paper's Table 2 measures the alpha at which that happens). The full CEDA/ACET table at
a stated reduced scale is in `benchmarks/ood.md`.
"""),
]
