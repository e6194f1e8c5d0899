"""Minimal adversarial perturbations in l1, l2 and l_inf, one call shape for all:

    result = attack(logits_fn, x, labels, *, p, key, box=Box(0, 1), **options) -> AttackResult

`logits_fn` maps `[batch, ...]` inputs in the box to `[batch, K]` logits.
"""
from robustjax.attacks.result import (AttackResult, Box, best_of, check_inputs, finalize, lp_norm,
                                      robust_accuracy_curve)
from robustjax.attacks.cw import cw
from robustjax.attacks.deepfool import deepfool
from robustjax.attacks.linearized import linearized
from robustjax.attacks.pgd import adversarial_training, ddn, make_pgd, pgd, pgd_minimal
from robustjax.attacks.plots import plot_adversarial_examples, plot_robust_accuracy
from robustjax.attacks.region import RegionInfo, region, region_with_info
from robustjax.attacks.spatial import SpatialResult, spatial_first_order, spatial_grid

__all__ = ["AttackResult", "Box", "best_of", "check_inputs", "finalize", "lp_norm", "robust_accuracy_curve"]
__all__ += ["adversarial_training", "cw", "ddn", "deepfool", "make_pgd", "pgd", "pgd_minimal",
            "plot_adversarial_examples", "plot_robust_accuracy"]
__all__ += ["SpatialResult", "spatial_first_order", "spatial_grid"]
__all__ += ["RegionInfo", "region", "region_with_info"]
__all__ += ["linearized"]
