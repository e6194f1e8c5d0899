"""Confidence far from the data and CEDA/ACET training (Hein, Andriushchenko, Bitterwolf, CVPR 2019;
methods.md section 4).

    python scripts/far_from_data.py --config mnist --out runs/ood_mnist       (about 6 min on 2 busy cores)
    python scripts/far_from_data.py --config cifar10 --out runs/ood_cifar10   (ROBUSTJAX_DATA=/work/shared/data)
    python scripts/far_from_data.py --config quick --out /tmp/ood             (tests: about 1 min)

The paper (methods.md Appendix B, SVHN-trained ResNet, 100 epochs): MMC on noise plain .720, CEDA and
ACET .100; on adversarial noise plain 1.000, CEDA .946, ACET .101; test error 3.53 / 3.50 / 3.52 %.
Table 2: median alpha at which uniform noise gets 99.9 % confidence, MNIST plain 1.5, ACET 3.0e15;
CIFAR-10 plain 8.1, ACET 45.3.

Here, reduced for a shared 2-core CPU (stated in the results): MNIST with the MMR paper's small CNN
(conv16-conv32-fc100) on 30k training images for 2 epochs, CIFAR-10 with the same CNN on 10k images for
5 epochs; Adam instead of SGD with momentum; ACET with 5 PGD steps of 0.075 (eps 0.3) instead of 40 of
eps/40. The weight of the noise term is 1 (our loss is twice the paper's normalization, see robustjax/ood.py).
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
    train_size=30000,
    seed=0,
    weight_decay=0.0,         # regularizers.weight_decay weight (the paper: 5e-4 ||W||^2 = weight 1e-3)
    methods=("plain", "ceda", "acet"),
    noise="lowpass",          # the training noise of CEDA / ACET
    noise_weight=1.0,
    acet_eps=0.3,
    acet_steps=5,
    acet_step_size=0.075,
    n_test=2000,              # in-distribution points for MMC / AUROC / FPR
    n_ood=1000,               # points per out-distribution set
    adv_eps=0.3,              # adversarial noise (evaluation): l_inf PGD around low-pass noise
    adv_steps=40,
    adv_step_size=0.02,
    adv_restarts=2,
    n_alpha=200,              # uniform-noise points for the alpha scaling
    alpha_target=0.999,
    alpha_max_exp=20,         # alphas from 1 to 10**alpha_max_exp, 8 per decade
    overconfident=0.95,       # threshold of "% overconfident" after projecting alpha x to the box
    curve_alphas=(1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1e3, 1e4, 1e6, 1e8),
)


def get_config(arg: str = "mnist") -> dict:
    """Variants: "mnist" (default), "cifar10", "quick" (a tiny run for tests), "main" (robustjax --quick)."""
    cfg = dict(DEFAULTS)
    if arg in ("", "mnist"):
        return cfg
    if arg == "cifar10":
        cfg.update(dataset="cifar10", train_size=10000, epochs=5)
        return cfg
    if arg == "quick":
        cfg.update(model="mlp", model_config={"widths": (64,), "act": "relu"}, learning_rate=3e-3, epochs=1,
                   train_size=5000, acet_steps=3, acet_step_size=0.15, n_test=300, n_ood=100, adv_steps=10,
                   adv_step_size=0.05, adv_restarts=1, n_alpha=20, alpha_max_exp=12,
                   curve_alphas=(1.0, 10.0, 100.0, 1e4))
        return cfg
    if arg == "main":
        # robustjax --quick: a 784-256-10 ReLU MLP on 20k images for 2 epochs per method (about 94 % test
        # accuracy; training CEDA and ACET is most of the part), ACET with 3 PGD steps, 500 test points against
        # 200 per out-distribution set
        cfg.update(model="mlp", model_config={"widths": (256,), "act": "relu"}, learning_rate=1e-3, epochs=2,
                   train_size=20000,
                   acet_steps=3, acet_step_size=0.15, n_test=500, n_ood=200, adv_steps=10,
                   adv_step_size=0.05, adv_restarts=1, n_alpha=50, alpha_max_exp=12,
                   curve_alphas=(1.0, 10.0, 100.0, 1e4))
        return cfg
    raise ValueError(f"unknown ood config {arg!r}; known: mnist, cifar10, quick, main")
