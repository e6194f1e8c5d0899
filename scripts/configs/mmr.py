"""MMR on MNIST (Croce, Andriushchenko, Hein, AISTATS 2019; methods.md 5): a 784-1024-10 ReLU MLP (the paper's
FC1) trained plain, with MMR, and with MMR + adversarial training, then attacked by minimal-distance attacks;
the talk's claim: on such nets the established attacks overestimate the distance the region attack finds.

    nice -n 10 python scripts/mmr.py --out benchmarks/results   (benchmarks/mmr.md and results/mmr.json)
    python scripts/mmr.py --config quick --out /tmp/mmr          (a smoke run)

The paper's MNIST FC1 l_inf numbers (methods.md Appendix A, TE / LB / UB robust error at eps 0.1, %): plain
1.44/93.0/100, MMR 2.11/22.5/24.9, MMR+at 2.04/14.0/14.1 (100 epochs; lambda ramped over 10 epochs, k_B from
10 % to 2 %, 40-step PGD for +at). Here, for a CPU budget: a few epochs, lambda and k_B fixed, 10-step PGD.
"""
from __future__ import annotations

INF = float("inf")

NET = dict(model="mlp", model_config={"widths": (1024,), "act": "relu"}, optimizer="adam", learning_rate=1e-3,
           schedule="constant", epochs=2, batch_size=128, train_size=None)
# the paper's MNIST l_inf setting (methods.md 5: MNIST CNN l_inf lambda 0.5, gamma_B = gamma_D = 0.2)
MMR = ("mmr", 0.5, {"p": INF, "gamma_boundary": 0.2, "gamma_decision": 0.2, "k_boundary": 0.05})
AT = ("adversarial_training", 1.0, {"p": INF, "eps": 0.1, "steps": 10})

DEFAULTS = dict(
    seed=0,
    net=NET,
    schemes={"plain": (), "mmr": (MMR,), "mmr_at": (MMR, AT)},
    eps=0.1,                         # the paper's MNIST l_inf radius
    n_eval=1000,                     # test points for PGD robust error and CROWN certified error at eps
    pgd=dict(steps=100, restarts=1),
    certify="crown",                 # robustjax.bounds method, or None
    n_attack=25,                     # test points for the minimal attacks (the correctly classified among them)
    norms=(INF, 2.0),
    attacks={INF: ("deepfool", "pgd_minimal", "region"), 2.0: ("deepfool", "cw", "ddn", "pgd_minimal", "region")},
    deepfool=dict(steps=50, overshoot=0.02),
    cw=dict(steps=1000, binary_search_steps=9, learning_rate=0.01, initial_const=1e-3),   # the library defaults
    ddn=dict(steps=100),
    pgd_minimal=dict(),
    region=dict(n_regions=20, restarts=0),
    region_processes=2,
)


def get_config(arg: str = "default") -> dict:
    """Variants: "default" (benchmarks/mmr.md), "quick" (a smoke run: 2000 training images, 1 epoch, 3 points)."""
    cfg = dict(DEFAULTS)
    if arg in ("", "default"):
        return cfg
    if arg == "quick":
        cfg.update(net=dict(NET, epochs=1, train_size=2000, model_config={"widths": (64,), "act": "relu"}),
                   n_eval=100, n_attack=3, pgd=dict(steps=10, restarts=1), cw=dict(DEFAULTS["cw"], steps=20,
                   binary_search_steps=2), ddn=dict(steps=20), region=dict(n_regions=3, restarts=0),
                   region_processes=1)
        return cfg
    raise ValueError(f"unknown mmr config {arg!r}; known: default, quick")
