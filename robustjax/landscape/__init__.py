"""Why training works (methods.md section 3): layer widths and the wide-layer check, feature-map
rank, "rand" fits of skip networks by least squares, and the single neuron with many local minima."""
from robustjax.landscape.widths import (IMAGENET_N, Check, Layer, WideLayerReport, activation_checks,
                                        distinct_inputs, distinct_patches, layer_widths, pyramidal_from,
                                        wide_layer_check, widest)

__all__ = [
    "IMAGENET_N", "Check", "Layer", "WideLayerReport", "activation_checks", "distinct_inputs",
    "distinct_patches", "layer_widths", "pyramidal_from", "wide_layer_check", "widest",
]
