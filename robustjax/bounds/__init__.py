"""Sound bounds for any network (robustjax.network.Graph, layer list or traced logits_fn): IBP, CROWN,
alpha-CROWN over l_p balls (p = 1, 2, inf) in boxes, certified radii by bisection, and the rounding-error
bound that makes them hold for float32 evaluation too.

    bounds.margin_bounds(net, x, labels, *, eps, p, box, method)   # [B, K] lower bounds of f_y - f_j
    bounds.certified_radius(net, x, labels, *, p, box, method)     # certify.CertificateResult
    bounds.lipschitz.theorem21_radius(...)                          # Theorem 2.1 for deep smooth nets
"""
from robustjax.bounds import lipschitz
from robustjax.bounds.ibp import IBP, Interval, interval_bounds
from robustjax.bounds.propagate import (METHODS, as_network, linear_bounds, margin_bounds, margin_specs,
                                        output_bounds, predict_float64)
from robustjax.bounds.radius import certified_radius, verified

__all__ = ["lipschitz", "IBP", "Interval", "interval_bounds", "METHODS", "as_network", "linear_bounds", "margin_bounds",
           "margin_specs", "output_bounds", "predict_float64", "certified_radius", "verified"]
