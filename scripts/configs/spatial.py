"""Spatial robustness (Engstrom et al., arXiv:1712.02779, cited in the talk): the worst rotation and
translation of test images, by grid search and by a first-order search.

    python scripts/spatial.py --config mnist --out runs/spatial_mnist     (about 3 min on 2 busy cores)
    python scripts/spatial.py --config cifar10 --out runs/spatial_cifar10 (ROBUSTJAX_DATA=/work/shared/data)
    python scripts/spatial.py --config quick --out /tmp/spatial           (tests: about 30 s)

Range: rotations in [-30, 30] degrees and translations of up to 3 pixels (Engstrom et al.'s MNIST range; for
CIFAR-10 they used 10 % of the image size, 3 pixels, and 30 degrees), grid 31 angles x 7 x 7 shifts (every
integer shift). Expected shape of the result (Engstrom et al., Table 1, recalled, not verified): standard
MNIST CNN accuracy about 99 % clean and about 26 % under the grid attack on rotation+translation; the
first-order attack is clearly weaker than the grid. Our models are smaller and trained briefly (see the
config), so compare the ordering, not the numbers.
"""
from __future__ import annotations

DEFAULTS = dict(
    dataset="mnist",
    model="mmr_cnn",
    model_config={"act": "relu"},
    optimizer="adam",
    learning_rate=1e-3,
    schedule="piecewise",
    epochs=2,
    batch_size=128,
    train_size=None,
    seed=0,
    n_attack=500,             # first test points attacked
    max_angle=30.0,           # degrees
    max_shift=3.0,            # pixels
    num_angles=31,
    num_shifts=7,
    padding="zeros",
    fo_steps=20,              # first-order search: sign-PGD steps per restart
    fo_restarts=2,
    fo_step_size=0.15,        # in normalized parameter units ([-1, 1] = the range)
    fo_line_search=16,
    attack_batch=100,
    scales=(0.0, 1 / 3, 2 / 3, 1.0),   # fractions of the range for the robust-accuracy table
    n_figure=6,               # examples in the original/transformed figure
)


def get_config(arg: str = "mnist") -> dict:
    """Variants: "mnist" (default), "cifar10", "quick" (a tiny run for tests), "main" (robustjax --quick)."""
    cfg = dict(DEFAULTS)
    if arg in ("", "mnist"):
        return cfg
    if arg == "cifar10":
        cfg.update(dataset="cifar10", epochs=4, train_size=20000, n_attack=300)
        return cfg
    if arg == "quick":
        cfg.update(model="mlp", model_config={"widths": (64,), "act": "relu"}, learning_rate=3e-3, epochs=1,
                   train_size=5000, n_attack=40, num_angles=11, num_shifts=5, fo_steps=8, fo_restarts=1,
                   fo_line_search=4, attack_batch=40, n_figure=3)
        return cfg
    if arg == "main":
        # robustjax --quick: a 784-256-10 ReLU MLP on all 60k images for 2 epochs (about 97-98 % test accuracy),
        # 100 attacked points, the quick grid
        cfg.update(model="mlp", model_config={"widths": (256,), "act": "relu"}, learning_rate=1e-3, epochs=2,
                   n_attack=100, num_angles=11, num_shifts=5, fo_steps=8, fo_restarts=1, fo_line_search=4,
                   attack_batch=100, n_figure=4)
        return cfg
    raise ValueError(f"unknown spatial config {arg!r}; known: mnist, cifar10, quick, main")
