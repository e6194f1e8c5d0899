"""The region attack in action (the talk's slide): a small ReLU net per data set, the randomized region
attack (Croce & Hein) in l2 on one correctly classified test point, its best distance over the regions
sampled and its adversarial point after a few of them.

    python scripts/attack_in_action.py --out benchmarks/results/attack_in_action   (the committed figures)
    python scripts/attack_in_action.py --config quick --out /tmp/aia                (tiny, for a smoke run)

Nets: MNIST 784-256-256-10 and CIFAR-10 3072-256-256-10 ReLU MLPs, Adam, trained briefly on a subset (CIFAR-10 only
where $ROBUSTJAX_DATA holds cifar10.npz). The attack: `attacks.region` with n_regions regions from the start
`start` (below), snapshots after `snapshots` regions.
"""
from __future__ import annotations

NETS = {
    "mnist": dict(model="mlp", model_config={"widths": (256, 256), "act": "relu"}, optimizer="adam",
                  learning_rate=1e-3, schedule="piecewise", epochs=1, batch_size=128, train_size=20000),
    "cifar10": dict(model="mlp", model_config={"widths": (256, 256), "act": "relu"}, optimizer="adam",
                    learning_rate=1e-3, schedule="piecewise", epochs=2, batch_size=128, train_size=20000),
}

DEFAULTS = dict(
    seed=0,
    datasets=("mnist", "cifar10"),   # cifar10 is skipped (with a note) where the data are not available
    nets=NETS,
    p=2,
    n_regions=40,
    batch_regions=10,
    snapshots=(1, 5, 20),            # region counts after which the attack's point is shown
    point=0,                         # the k-th correctly classified test point (of the first 100) is attacked
    # "train": the authors' start (methods.md 2), the nearest training image (l2, of the net's training subset)
    # of another class that the net also classifies as another class, then the line search from x toward it;
    # the slide's scheme, the image moving toward the target. "cheap": the library's default starts (DeepFool,
    # DDN, minimal PGD), already close: the region search then improves by a few percent only.
    start="train",
    restarts=0,                      # one search, as on the slide; None: the library's restarts over the classes
)


def get_config(arg: str = "default") -> dict:
    """Variants: "default" (the committed figures), "quick" (a smoke run: fewer regions, less training)."""
    cfg = dict(DEFAULTS)
    if arg in ("", "default"):
        return cfg
    if arg == "quick":
        cfg.update(nets={k: dict(v, model_config={"widths": (64,), "act": "relu"}, epochs=1, train_size=2000)
                         for k, v in NETS.items()}, n_regions=10, batch_regions=5, snapshots=(1, 3, 5))
        return cfg
    raise ValueError(f"unknown attack_in_action config {arg!r}; known: default, quick")
