"""Adversarial attacks in l1, l2 and l_inf (and spatial transformations), two call shapes:

    minimal attacks: attack(logits_fn, x, labels, *, p, key, box, **options) -> AttackResult
        the smallest perturbation found per example: deepfool, cw, ddn, pgd_minimal, linearized, region,
        fab and fab_targeted (both also take an eps threshold), spatial_grid and spatial_first_order (both
        take p=None: their distance is a transformation's magnitude, not an l_p norm)
    budget attacks:  attack(logits_fn, x, labels, *, p, eps, key, box, **options) -> AttackResult
        any adversarial point within ||x_adv - x||_p <= eps (scalar or `[batch]`): pgd, apgd, apgd_targeted,
        square

`standard_evaluation` runs an AutoAttack-style cascade of them (APGD-CE, APGD-T, FAB-T, Square) at eps.

`logits_fn` maps `[batch, ...]` inputs in the box to `[batch, K]` logits. `box` is a Box, a pair (lo, hi) or
None (the unit box [0, 1]); lo and hi broadcast against x: a scalar, one example's shape (a per-pixel box)
or `[batch, ...]` (one box per example, as verification properties come). `key` is a jax.random key;
deterministic attacks accept key=None and ignore it. Every result goes through `finalize`: clipped to the
box, re-verified with the model (`result.py` says what `success` guarantees), distance 0 for inputs the
model misclassifies, inf and x_adv = x where nothing was found. An empty batch gives an empty result.
Method-specific extras are in `AttackResult.info`.
"""
from robustjax.attacks.result import (AttackResult, Box, best_of, check_inputs, finalize, keep_best, lp_norm,
                                      robust_accuracy_curve)
from robustjax.attacks.cw import cw
from robustjax.attacks.ddn import ddn
from robustjax.attacks.deepfool import deepfool
from robustjax.attacks.linearized import linearized
from robustjax.attacks.pgd import make_pgd, pgd, pgd_minimal
from robustjax.attacks.adversarial_training import adversarial_training
from robustjax.attacks.apgd import apgd, apgd_targeted
from robustjax.attacks.fab import fab, fab_targeted
from robustjax.attacks.square import square
from robustjax.attacks.standard import StandardEvaluation, standard_evaluation
from robustjax.attacks.plots import plot_adversarial_examples, plot_attack_in_action, plot_robust_accuracy
from robustjax.attacks.region import region
from robustjax.attacks.spatial import spatial_first_order, spatial_grid

__all__ = ["AttackResult", "Box", "best_of", "check_inputs", "finalize", "keep_best", "lp_norm",
           "robust_accuracy_curve"]
__all__ += ["adversarial_training", "cw", "ddn", "deepfool", "linearized", "make_pgd", "pgd", "pgd_minimal",
            "region", "spatial_first_order", "spatial_grid"]
__all__ += ["plot_adversarial_examples", "plot_attack_in_action", "plot_robust_accuracy"]
__all__ += ["StandardEvaluation", "apgd", "apgd_targeted", "fab", "fab_targeted", "square", "standard_evaluation"]
