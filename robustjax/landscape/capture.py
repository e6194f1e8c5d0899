"""Which module outputs count as a network's layers, and how to read them back from Flax's
`capture_intermediates`: shared by `widths.layer_widths` (shapes only) and `rank.feature_matrix` (values).

A layer is the output of a `robustjax.models.zoo.Act` module (each activated layer of the zoo and skip
networks); a model without `Act` modules is read through its `nn.Conv` / `nn.Dense` outputs.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from robustjax.models.zoo import Act


def is_activated_layer(mdl: nn.Module) -> bool:
    """True for a `zoo.Act` module: its output is an activated layer."""
    return isinstance(mdl, Act)


def is_linear_layer(mdl: nn.Module) -> bool:
    """True for `nn.Conv` and `nn.Dense`: the layers of a model without `Act` modules (pre-activation)."""
    return isinstance(mdl, (nn.Conv, nn.Dense))


def captured_outputs(tree, prefix: str = "") -> list[tuple[str, jax.Array]]:
    """Captured intermediates {module: {'__call__': (out,)}} -> [(path, out)] in insertion (call) order;
    the path joins the module names with "/" ("root" for the model itself)."""
    items = []
    for key, val in tree.items():
        if key == "__call__":
            items.extend((prefix.rstrip("/") or "root", a) for a in val)
        else:
            items.extend(captured_outputs(val, f"{prefix}{key}/"))
    return items
