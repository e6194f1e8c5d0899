"""Zhang, Bengio, Hardt, Recht, Vinyals, "Understanding deep learning requires rethinking generalization"
(ICLR 2017), as the talk quotes it: the same network, trained the same way, reaches (close to) zero training
error on the true labels, on randomly permuted labels and on random inputs; the test accuracy of the latter
two is at chance. The talk's answer (early stopping, implicit regularization of SGD): the test accuracy
over training on the true labels.

    python scripts/random_labels.py --config mnist --out runs/random_labels   (about 1 min on 2 cores)
    python scripts/random_labels.py --config quick --out /tmp/rl               (the main job's section: ~15 s)

Zhang et al. used CIFAR-10 (50,000 images) and ImageNet with Inception / AlexNet / MLPs and SGD with
momentum; here, on a 2-core CPU: an MLP 784-512-512-10 ReLU on the first N MNIST training images (the
embedded copy, no download), Adam at a constant learning rate (no explicit regularization: no weight
decay, no dropout, no data augmentation), test accuracy on the first n_test MNIST test images after every
epoch. "Random labels" permutes the N training labels once (seed fixed); "random inputs" replaces every
training image by Gaussian pixels with the training set's mean and standard deviation (Zhang et al.'s
"Gaussian" variant), keeping the labels, clipped to [0, 1].
"""
from __future__ import annotations

DEFAULTS = dict(
    seed=0,
    model="mlp",
    model_config={"widths": (512, 512), "act": "relu"},
    optimizer="adam",
    learning_rate=1e-3,
    schedule="constant",
    batch_size=128,
    n_train=5000,
    n_test=2000,
    epochs=120,
    settings=("true_labels", "random_labels", "random_inputs"),
    fit_threshold=0.01,       # "close to zero training error": at most 1 % of the training set misclassified
)


def get_config(arg: str = "mnist") -> dict:
    """Variants: "mnist" (N = 5,000, the CPU scale) and "quick" (N = 1,000, for the main job)."""
    cfg = dict(DEFAULTS)
    if arg in ("", "mnist"):
        return cfg
    if arg == "quick":
        cfg.update(n_train=1000, n_test=1000, epochs=40)
        return cfg
    raise ValueError(f"unknown random_labels config {arg!r}; known: mnist, quick")
