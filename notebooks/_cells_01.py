NAME = "01_loss_landscape"
CELLS = [
("md", r"""
# 01 Why training works: wide layers, full-rank features, rand against SGD

Training a neural network is NP-hard in general and a single neuron can have exponentially many local
minima (Auer et al. 1996), yet large networks train to zero training error. The talk's answer
(Nguyen & Hein, ICML 2017/2018):

**Lemma.** If a layer has $n_k \ge N$ units (N training points) and the network is pyramidal from
there on, then for almost all parameters the feature matrix $F_k \in \mathbb{R}^{N\times n_k}$ of the
training data has full rank $N$.

**Theorem.** Under that condition (analytic, strictly increasing activation; distinct training
points; squared loss) every critical point with full-rank weights is a global minimum with zero
training error.
"""),
("code", r"""
import os
SMALL = os.environ.get("ROBUSTJAX_SMALL") == "1"      # the tests set this: a tiny run
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from robustjax import data, landscape, models, train
from robustjax.landscape import lstsq, rank, single_neuron
"""),
("md", r"""
## The bad news: a single neuron with many local minima

Auer et al.'s construction: one sigmoid neuron on two-dimensional inputs, squared loss. Random
restarts of a local optimizer end in many different minima; a wide network on the same data reaches
zero loss from every start.
"""),
("code", r"""
X, y = single_neuron.auer_examples(per_dim=3 if SMALL else 5)
finals = single_neuron.neuron_restarts(X, y, jax.random.key(0), n_starts=10 if SMALL else 50)[:, -1]  # losses
wide = single_neuron.wide_net_restarts(X, y[:, None] if y.ndim == 1 else y, jax.random.key(1),
                                       hidden=len(X), n_starts=3 if SMALL else 10)
fig, ax = plt.subplots(figsize=(6, 3))
bins = np.linspace(0.0, max(float(np.max(finals)), 1e-3) * 1.05, 40)   # one grid: the wide net's zeros show
ax.hist(np.asarray(finals), bins=bins, alpha=0.7, label="single neuron: final losses")
ax.hist(np.asarray(wide), bins=bins, alpha=0.7, label=f"wide net ({len(X)} hidden units): final losses")
ax.set_xlabel("training loss at the end of a local search"); ax.legend(); plt.tight_layout(); plt.show()
print("distinct single-neuron final losses:", len(np.unique(np.round(np.asarray(finals), 4))),
      "| wide net max final loss:", float(np.max(wide)))
"""),
("md", r"""
## Are practical networks that wide?

Layer widths computed from the models' own definitions by shape inference (`jax.eval_shape`: nothing
is allocated or computed), at ImageNet resolution, against N = 1.28 million.
"""),
("code", r"""
names = ["vgg16", "googlenet", "resnet50"] if SMALL else ["vgg11", "vgg16", "inception_v3", "inception_v4",
         "squeezenet", "enet", "googlenet", "resnet50", "xception", "densenet121"]
for name in names:
    m = models.build(name)
    size = 299 if "inception" in name or name == "xception" else (512 if name == "enet" else 224)
    layers = landscape.layer_widths(m, (1, size, size, 3))
    w = landscape.widest(layers)
    print(f"{name:14s} max n_k = {w.units:>10,d} at layer k = {w.k} ({w.name}); "
          f"exceeds N = {landscape.IMAGENET_N:,}: {w.units >= landscape.IMAGENET_N}")
"""),
("md", r"""
## The rank lemma on real data

A random MLP on N MNIST images: the feature matrix of a layer with $n_k \ge N$ units has rank N; a
narrower layer has rank at most $n_k$. The numerical rank uses the tolerance $\sigma_{max}\cdot
\max(N, n_k)\cdot\epsilon$ (NumPy's convention).
"""),
("code", r"""
(xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
N = 200 if SMALL else 1000
x = xtr[:N]
mlp = models.build("mlp", widths=(2 * N, N // 2), act="softplus", num_classes=10)
v = models.init(mlp, jax.random.key(0), (1, 28, 28, 1))
for layer in (1, 2):
    F = rank.feature_matrix(mlp, v, x, layer)
    r = rank.numerical_rank(F)
    print(f"layer {layer}: F is {F.shape}, numerical rank {r.rank} (tolerance {r.tol:.2e}, {r.rule})")
print(landscape.wide_layer_check(mlp, (1, 28, 28, 1), N, act="softplus", x=x).summary())
relu = models.build("mlp", widths=(2 * N,), act="relu")
print(landscape.wide_layer_check(relu, (1, 28, 28, 1), N, act="relu", x=x).summary())
"""),
("md", r"""
## rand against SGD

A network with $M \ge N$ hidden units connected straight to the output (Nguyen, Mukkamala & Hein 2019).
"rand": keep the random hidden weights and fit only the output layer by least squares, which gives
zero training error with probability 1. "SGD": train the whole network. Both fit the training set;
SGD generalizes far better: among the many zero-error solutions it picks a good one (the implicit
regularization of SGD).
"""),
("code", r"""
n_train = 300 if SMALL else 5000
skip = models.build("vgg11_skip", act="softplus", width_mult=0.125, classifier=(64, 64),
                    skip_units=2 * n_train, num_classes=10)
xs = np.repeat(xtr[:n_train], 3, axis=-1)
xs = np.pad(xs, ((0, 0), (2, 2), (2, 2), (0, 0)))                      # 32x32x3 like CIFAR
xt = np.pad(np.repeat(xte[:1000], 3, axis=-1), ((0, 0), (2, 2), (2, 2), (0, 0)))
v0 = models.init(skip, jax.random.key(0), (1, 32, 32, 3))
fit = lstsq.rand_fit(skip, v0, xs, ytr[:n_train])
rand_test = float(np.mean(np.argmax(lstsq.predict(skip, fit.variables, xt), -1) == yte[:1000]))
print(f"rand: train accuracy {fit.train_accuracy:.4f} (zero training error: {fit.zero_train_error}), "
      f"test accuracy {rand_test:.4f}, solve {fit.info.method} {fit.info.time_s:.1f}s")
cfg = train.TrainConfig(model="vgg11_skip", model_config=dict(act="softplus", width_mult=0.125, classifier=(64, 64),
                        skip_units=2 * n_train), optimizer="adam", learning_rate=3e-3, schedule="cosine",
                        epochs=10 if SMALL else 20, batch_size=50, progress=False)
sgd = train.fit(cfg, (xs, ytr[:n_train]))
print(f"SGD:  train accuracy {train.evaluate(sgd, xs, ytr[:n_train])['accuracy']:.4f}, "
      f"test accuracy {train.evaluate(sgd, xt, yte[:1000])['accuracy']:.4f}")
"""),
("md", r"""
The talk's CIFAR-10 table (VGG11/16, DenseNet121; plain, -skip rand, -skip SGD; sigmoid and softplus)
is reproduced at a stated reduced scale by `scripts/landscape.py --config quick` and in
`benchmarks/`; the full scale needs a GPU (the config names the hardware).
"""),
]
