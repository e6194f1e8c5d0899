"""Per-example losses on logits, the one registry for training and attacks. Each takes keyword-only
`logits` `[batch, K]` and integer `labels` `[batch]` and returns `[batch]`; `get(name)` looks one up by name.
Training minimizes them; attacks maximize them ("margin", "cross_entropy" and "dlr" are the attack losses)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from robustjax import geometry


def softmax_cross_entropy(*, logits, labels):
    """-log softmax(logits)[label]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def squared(*, logits, labels):
    """sum_j (f_j(x) - onehot_j)^2 (the squared loss of the wide-layer theorems)."""
    return jnp.sum((logits - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)) ** 2, -1)


def huber(*, logits, labels, delta: float = 1.0):
    """sum_j huber_delta(f_j(x) - onehot_j): quadratic below delta, linear beyond (C^1)."""
    r = logits - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(optax.huber_loss(r, delta=delta), -1)


def pseudo_huber(*, logits, labels, delta: float = 1.0):
    """sum_j delta^2 (sqrt(1 + (r_j/delta)^2) - 1): a C^inf Huber, which the ICML 2017 theorem admits."""
    r = logits - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(delta ** 2 * (jnp.sqrt(1 + (r / delta) ** 2) - 1), -1)


def margin(*, logits, labels):
    """max_{j != y} f_j - f_y = -geometry.margin: positive iff misclassified (ties aside); the attack loss
    of Carlini & Wagner (2017, f_6)."""
    return -geometry.margin(logits, labels)


def _sorted_desc(logits):
    return -jnp.sort(-logits, axis=-1)


def _floor(d, tiny: float = 1e-12):
    """max(d, tiny) with the gradient of a select on d > tiny (jnp.maximum's compares d with the result bitwise,
    which XLA may compute in another fusion: `geometry.take_max`)."""
    return jnp.where(d > tiny, d, tiny)


def dlr(*, logits, labels):
    """Difference of logits ratio (Croce & Hein, ICML 2020): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3),
    pi sorting the logits in decreasing order (K >= 3); invariant to shifting and scaling the logits,
    positive iff misclassified. The denominator is floored at 1e-12."""
    zs = _sorted_desc(logits)
    return -geometry.margin(logits, labels) / _floor(zs[:, 0] - zs[:, 2])


def dlr_targeted(*, logits, labels, target):
    """Targeted DLR (Croce & Hein, ICML 2020): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) (K >= 4),
    target `[batch]` int; maximized to reach class t. Not in LOSSES: it needs the target as well."""
    zs = _sorted_desc(logits)
    zy = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
    zt = jnp.take_along_axis(logits, target[:, None], -1)[:, 0]
    return -(zy - zt) / _floor(zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]))


LOSSES: dict[str, Callable] = {
    "cross_entropy": softmax_cross_entropy,
    "squared": squared,
    "huber": huber,
    "pseudo_huber": pseudo_huber,
    "margin": margin,
    "dlr": dlr,
}


def get(name) -> Callable:
    """The loss registered as `name` (a callable passes through); ValueError naming the known ones."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]
