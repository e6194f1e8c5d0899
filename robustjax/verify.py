"""Exact minimal adversarial perturbations of small ReLU networks: the references attacks are tested against.

- `min_adversarial_milp`: the true minimal l_inf or l1 perturbation by mixed-integer linear programming
  (Tjeng, Xiao & Tedrake, "Evaluating robustness of neural networks with mixed integer programming",
  ICLR 2019: MIPVerify), solved by `scipy.optimize.milp` (HiGHS), big-M constants from interval
  bound propagation, with a time limit and an honest status.
- `min_adversarial_l2_2d`: the exact minimal l2 perturbation for two-dimensional inputs, by walking
  the linear regions of the network (each region is a convex polygon in 2-D; on it the network is
  affine, so the minimum over it is a point-to-polygon distance).

A network is a `robustjax.network` graph or a sequence of its layers; the exact methods here take chains of
`Dense`, `ReLU` and `Flatten` on flat inputs `[d]` (`dense_layers(variables)` reads one from a Flax MLP's
variables; `network.trace` reads any jittable model). Evaluation and linear regions are the network's
(`network.evaluate_numpy`, `network.region_map`); interval bounds and the MILP dispatch on the layer kind
through a table (`_IBP`, `_MILP`), in the style of jax_verify's primitive tables.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import optimize, sparse

from robustjax import network, validate
from robustjax.geometry import Box, as_box, check_norm
from robustjax.network import Affine, Dense, Flatten, ReLU

Layer = network.Layer


def chain_layers(layers, what: str) -> list:
    """The layers of a chain graph of Dense / Affine / ReLU / Flatten on flat inputs (an Affine layer of a graph
    with an input shape gets its scale and shift spread over that shape and flattened); ValueError naming what
    is not."""
    graph = network.as_graph(layers)
    if not graph.is_chain():
        raise ValueError(f"{what} takes a chain of layers (no residual or concatenated branches)")
    bad = sorted({type(l).__name__ for l in graph.layers if not isinstance(l, (Dense, Affine, ReLU, Flatten))})
    if bad:
        raise ValueError(f"{what} handles Dense, Affine, ReLU and Flatten layers; got {', '.join(bad)}")
    if graph.input_shape is None or not any(isinstance(l, Affine) for l in graph.layers):
        return list(graph.layers)
    from robustjax.bounds import crown
    shapes = crown.node_shapes(graph, graph.input_shape)
    flat = lambda v, k: np.broadcast_to(np.asarray(v, np.float64), shapes[k]).reshape(-1)  # noqa: E731
    return [l._replace(scale=flat(l.scale, k), shift=flat(l.shift, k)) if isinstance(l, Affine) else l
            for k, l in enumerate(graph.layers)]


def _example(x, layers, label, box, what):
    """x as float64 `[d]` (finite, inside the box), the box as float64 `[d]` arrays, its logits, the label
    checked against them."""
    x = np.asarray(validate.batch(np.asarray(x)[None], "x"), np.float64).reshape(-1)
    box = as_box(box, x[None])
    lo, hi = np.asarray(box.lo, np.float64)[0], np.asarray(box.hi, np.float64)[0]
    if np.any(x < lo - 1e-9) or np.any(x > hi + 1e-9):
        raise ValueError(f"{what}: x lies outside the box (by up to {max(np.max(lo - x), np.max(x - hi)):.3g})")
    logits = forward(layers, x[None])[0]
    validate.labels(np.asarray([label]), 1, num_classes=logits.shape[0], name="label")
    return x, lo, hi, logits


def dense_layers(variables, *, act: str = "relu") -> list:
    """The layers of a Flax ReLU MLP (robustjax.models.MLP: dense_0, ..., out; or OneHiddenLayer: U, W).

    variables: the model's variables (`{'params': ...}` or the params dict itself). Dense layers are
    read in insertion order with a ReLU between consecutive ones. Only act="relu" is exact.
    """
    if act != "relu":
        raise ValueError(f"act must be 'relu' (only ReLU networks can be verified exactly), got {act!r}")
    params = variables["params"] if "params" in variables else variables
    if "U" in params and "W" in params and not isinstance(params["U"], dict):
        U, W = np.asarray(params["U"], np.float64), np.asarray(params["W"], np.float64)
        return [Flatten(), Dense(U, np.zeros(U.shape[1])), ReLU(), Dense(W, np.zeros(W.shape[1]))]
    layers: list = [Flatten()]
    for name, sub in params.items():
        if not isinstance(sub, dict) or "kernel" not in sub:
            raise ValueError(f"layer {name!r} is not a dense layer (no 'kernel'); only MLPs are supported")
        k = np.asarray(sub["kernel"], np.float64)
        if k.ndim != 2:
            raise ValueError(f"layer {name!r} has a kernel of rank {k.ndim}; only dense layers are supported")
        b = np.asarray(sub["bias"], np.float64) if "bias" in sub else np.zeros(k.shape[1])
        if len(layers) > 1:
            layers.append(ReLU())
        layers.append(Dense(k, b))
    return layers


def forward(layers: Sequence[Layer], x) -> np.ndarray:
    """Float64 logits of x `[batch, ...]` -> `[batch, K]` (flattened first: the layers take flat inputs)."""
    x = np.asarray(x, np.float64)
    return network.evaluate_numpy(network.as_graph(layers), x.reshape(x.shape[0], -1))

# ----------------------------------------------------------------------------------------------
# Bounds for the big-M constants: the bounds package (IBP or CROWN), in float64
# ----------------------------------------------------------------------------------------------

BOUNDS = ("ibp", "crown")


def layer_bounds(layers: Sequence[Layer], x, lo, hi, *, p=np.inf, radius: float = np.inf,
                 method: str = "crown") -> list:
    """[(lo, hi)] `[width]` float64 of every layer's output over {z in [lo, hi]: ||z - x||_p <= radius}.

    method 'ibp' (interval bounds) or 'crown' (the pre-activation layers by CROWN, intersected with IBP):
    `robustjax.bounds.crown.intermediate_bounds`, sound in exact arithmetic and padded for their own float64
    rounding. x, lo, hi `[d]`; radius inf = the box alone.
    """
    import jax

    from robustjax.bounds import propagate
    if method not in BOUNDS:
        raise ValueError(f"bounds must be one of {BOUNDS}, got {method!r}")
    layers = chain_layers(layers, "layer_bounds")
    x, lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in (x, lo, hi))
    graph = network.as_graph(layers, (x.size,))
    with jax.enable_x64(True):
        s = propagate.input_set(x[None], radius, p, (lo[None], hi[None]))
        b = propagate.node_bounds(graph, s, method)
        return [(np.asarray(v.lo, np.float64).reshape(-1), np.asarray(v.hi, np.float64).reshape(-1)) for v in b[1:]]


def interval_bounds(layers: Sequence[Layer], lo, hi) -> list:
    """[(lo, hi)] of every layer's output for inputs in the box [lo, hi] `[d]` (IBP; sound, loose)."""
    lo = np.asarray(lo, np.float64)
    return layer_bounds(layers, 0.5 * (lo + np.asarray(hi, np.float64)), lo, hi, method="ibp")


# ----------------------------------------------------------------------------------------------
# MILP
# ----------------------------------------------------------------------------------------------


class VerifyResult(NamedTuple):
    """The minimal adversarial distance of one example, as far as the solver proved it.

    distance: the exact minimum when status == 'optimal' (within mip_rel_gap), else the best
      feasible distance found (= upper_bound; inf if none).
    lower_bound, upper_bound: the bounds the solver proved: lower_bound <= true minimum <= upper_bound.
    status: 'optimal', 'time_limit' (bounds above still hold), 'infeasible' (no adversarial example
      within max_distance / the box: lower_bound = max_distance), 'misclassified' (distance 0) or
      'error' (solver message in `message`).
    x_adv: `[d]` the minimizer (on the decision boundary f_t = f_c up to solver tolerance) or None.
    target: the class t reached, or -1.
    time_s: solver wall time.
    message: the solver's message.
    """
    distance: float
    lower_bound: float
    upper_bound: float
    status: str
    x_adv: np.ndarray | None
    target: int
    time_s: float
    message: str


class _Model:
    """A growing MILP: columns with bounds/integrality, rows as sparse triplets."""

    def __init__(self):
        self.lb, self.ub, self.integ, self.c = [], [], [], []
        self.rows, self.cols, self.vals, self.rlo, self.rhi = [], [], [], [], []
        self.n_rows = 0

    def add_vars(self, n, lb, ub, integer=False, cost=0.0):
        start = len(self.lb)
        self.lb.extend(np.broadcast_to(lb, (n,)).tolist())
        self.ub.extend(np.broadcast_to(ub, (n,)).tolist())
        self.integ.extend([int(integer)] * n)
        self.c.extend(np.broadcast_to(cost, (n,)).tolist())
        return np.arange(start, start + n)

    def add_rows(self, cols: np.ndarray, vals: np.ndarray, lo, hi):
        """Rows sum_j vals[i, j] x[cols[i, j]] in [lo_i, hi_i]; cols/vals `[m, k]` (dense per row)."""
        m = cols.shape[0]
        r = self.n_rows + np.repeat(np.arange(m), cols.shape[1])
        self.rows.append(r)
        self.cols.append(cols.reshape(-1))
        self.vals.append(vals.reshape(-1))
        self.rlo.append(np.broadcast_to(lo, (m,)))
        self.rhi.append(np.broadcast_to(hi, (m,)))
        self.n_rows += m

    def arrays(self):
        """The problem for `scipy.optimize.milp`: dict(integrality, constraints, bounds) (without the cost)."""
        A = sparse.csr_matrix((np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
                              shape=(self.n_rows, len(self.lb)))
        return dict(integrality=np.asarray(self.integ),
                    constraints=optimize.LinearConstraint(A, np.concatenate(self.rlo), np.concatenate(self.rhi)),
                    bounds=optimize.Bounds(np.asarray(self.lb), np.asarray(self.ub)))

    def solve(self, time_limit, rel_gap):
        return optimize.milp(np.asarray(self.c), **self.arrays(),
                             options={"time_limit": time_limit, "mip_rel_gap": rel_gap, "disp": False})


def _milp_dense(layer, m: _Model, h, bounds_in, bounds_out):
    """Pre-activation variables y = W^T h + b, equality rows."""
    W, b = layer.W, layer.b
    lo, hi = bounds_out
    y = m.add_vars(W.shape[1], lo, hi)
    cols = np.concatenate([np.broadcast_to(h, (W.shape[1], len(h))), y[:, None]], 1)
    vals = np.concatenate([W.T, -np.ones((W.shape[1], 1))], 1)
    m.add_rows(cols, vals, -b, -b)
    return y


def _milp_relu(layer, m: _Model, h, bounds_in, bounds_out):
    """a = relu(y) with y in [L, U]: fixed where the sign is known, else big-M with a binary delta:
    a >= y, a >= 0, a <= y - L (1 - delta), a <= U delta."""
    L, U = bounds_in
    n = len(h)
    a = m.add_vars(n, 0.0, np.maximum(U, 0.0))
    on, off = L >= 0, U <= 0
    amb = ~on & ~off
    if on.any():   # a = y
        m.add_rows(np.stack([a[on], h[on]], 1), np.tile([1.0, -1.0], (on.sum(), 1)), 0.0, 0.0)
    if amb.any():
        k = int(amb.sum())
        dlt = m.add_vars(k, 0.0, 1.0, integer=True)
        aa, yy, LL, UU = a[amb], h[amb], L[amb], U[amb]
        m.add_rows(np.stack([aa, yy], 1), np.tile([1.0, -1.0], (k, 1)), 0.0, np.inf)                    # a - y >= 0
        m.add_rows(np.stack([aa, yy, dlt], 1), np.stack([np.ones(k), -np.ones(k), -LL], 1),
                   -np.inf, -LL)                                                        # a - y - L d <= -L
        m.add_rows(np.stack([aa, dlt], 1), np.stack([np.ones(k), -UU], 1), -np.inf, 0.0)                # a - U d <= 0
    return a   # 'off' units: a has upper bound 0


def _milp_affine(layer, m: _Model, h, bounds_in, bounds_out):
    """y = h * scale + shift elementwise (scale, shift broadcast to the flat width), equality rows."""
    n = len(h)
    scale = np.broadcast_to(np.asarray(layer.scale, np.float64).reshape(-1), (n,))
    shift = np.broadcast_to(np.asarray(layer.shift, np.float64).reshape(-1), (n,))
    y = m.add_vars(n, *bounds_out)
    m.add_rows(np.stack([h, y], 1), np.stack([scale, -np.ones(n)], 1), -shift, -shift)
    return y


def _encode(m: _Model, layers, z, in_bounds, bounds) -> np.ndarray:
    """The network on the input columns z, exactly (big-M from `bounds`); returns the output columns."""
    h, b_in = z, in_bounds
    for layer, b_out in zip(layers, bounds):
        h = _MILP[type(layer)](layer, m, h, b_in, b_out)
        b_in = b_out
    return h


_MILP = {
    Dense: _milp_dense,
    Affine: _milp_affine,
    ReLU: _milp_relu,
    Flatten: lambda l, m, h, bi, bo: h,
}


def min_adversarial_milp(layers: Sequence[Layer], x, label: int, *, p=np.inf, box=None,
                         time_limit: float = 60.0, max_distance: float | None = None,
                         rel_gap: float = 1e-6, bounds: str = "crown") -> VerifyResult:
    """The minimal l_inf or l1 adversarial perturbation of one example by MILP (HiGHS).

    min ||z - x||_p  s.t.  lo <= z <= hi,  max_{t != c} f_t(z) >= f_c(z),  f the ReLU network, encoded
    exactly with big-M constraints whose constants come from bounds over the input box (CROWN by default;
    intersected with the ball of radius max_distance when given: a known attack distance makes the
    bounds much tighter). The disjunction over targets uses one binary per class.

    Args:
      layers: the network (`dense_layers(variables)`).
      x: `[...]` one input (flattened internally); label: its class c.
      p: inf or 1.
      box: Box, (lo, hi) or None ([0, 1]); lo, hi a scalar or x's shape.
      time_limit: seconds for HiGHS; on expiry status 'time_limit' and the proved bounds.
      max_distance: search only ||z - x||_p <= max_distance; 'infeasible' then proves that no adversarial
        example exists within it.
      rel_gap: HiGHS's relative MIP gap for 'optimal'.
      bounds: 'crown' or 'ibp', the bounds behind the big-M constants (`layer_bounds`); both are sound, the
        tighter ones make the MILP faster, never different.

    Returns: VerifyResult.
    """
    import time
    p = check_norm(p)
    if p == 2:
        raise ValueError("min_adversarial_milp handles p = inf and p = 1 (l2 is not linear); "
                         "use min_adversarial_l2_2d for 2-D inputs")
    layers = chain_layers(layers, "min_adversarial_milp")
    if bounds not in BOUNDS:
        raise ValueError(f"bounds must be one of {BOUNDS}, got {bounds!r}")
    time_limit = validate.positive_float(time_limit, "time_limit", allow_inf=True)
    if max_distance is not None:
        max_distance = validate.positive_float(max_distance, "max_distance", allow_inf=True)
    x, box_lo, box_hi, logits = _example(x, layers, label, box, "min_adversarial_milp")
    d = x.size
    K = logits.shape[0]
    if int(np.argmax(logits)) != label:
        return VerifyResult(0.0, 0.0, 0.0, "misclassified", x.copy(), int(np.argmax(logits)), 0.0, "")
    radius = np.inf if max_distance is None else float(max_distance)
    in_lo, in_hi = box_lo.copy(), box_hi.copy()
    if np.isfinite(radius):   # l1 and l_inf balls both lie inside the l_inf ball of the same radius
        in_lo, in_hi = np.maximum(in_lo, x - radius), np.minimum(in_hi, x + radius)
    bounds = layer_bounds(layers, x, in_lo, in_hi, p=p, radius=radius, method=bounds)   # the list from here on

    m = _Model()
    z = m.add_vars(d, in_lo, in_hi)
    if p == np.inf:
        t = m.add_vars(1, 0.0, radius, cost=1.0)
        m.add_rows(np.stack([z, np.repeat(t, d)], 1), np.tile([1.0, -1.0], (d, 1)), -np.inf, x)   # z - t <= x
        m.add_rows(np.stack([z, np.repeat(t, d)], 1), np.tile([1.0, 1.0], (d, 1)), x, np.inf)     # z + t >= x
    else:
        u = m.add_vars(d, 0.0, np.maximum(in_hi - x, x - in_lo), cost=1.0)
        m.add_rows(np.stack([z, u], 1), np.tile([1.0, -1.0], (d, 1)), -np.inf, x)
        m.add_rows(np.stack([z, u], 1), np.tile([1.0, 1.0], (d, 1)), x, np.inf)
        if np.isfinite(radius):
            m.add_rows(u[None], np.ones((1, d)), -np.inf, radius)
    h = _encode(m, layers, z, (in_lo, in_hi), bounds)
    out_lo, out_hi = bounds[-1]
    # disjunction: some t != c with f_t >= f_c; sel_t = 1 picks t; f_t - f_c >= -M_t (1 - sel_t)
    others = np.array([k for k in range(K) if k != label])
    sel = m.add_vars(len(others), 0.0, 1.0, integer=True)
    m.add_rows(sel[None], np.ones((1, len(others))), 1.0, 1.0)
    M = np.maximum(out_hi[label] - out_lo[others], 0.0)
    cols = np.stack([h[others], np.repeat(h[label], len(others)), sel], 1)
    vals = np.stack([np.ones(len(others)), -np.ones(len(others)), -M], 1)
    m.add_rows(cols, vals, -M, np.inf)
    t0 = time.perf_counter()
    res = m.solve(time_limit, rel_gap)
    dt = time.perf_counter() - t0
    msg = str(res.message)
    if res.status == 2:
        lb = radius if np.isfinite(radius) else np.inf
        return VerifyResult(np.inf, lb, np.inf, "infeasible", None, -1, dt, msg)
    dual = getattr(res, "mip_dual_bound", None)
    lower = float(dual) if dual is not None and np.isfinite(dual) else 0.0
    if res.x is None:
        status = "time_limit" if res.status == 1 else "error"
        return VerifyResult(np.inf, max(lower, 0.0), np.inf, status, None, -1, dt, msg)
    x_adv = np.clip(res.x[:d], box_lo, box_hi)
    upper = float(np.max(np.abs(x_adv - x)) if p == np.inf else np.sum(np.abs(x_adv - x)))
    target = int(others[int(np.argmax(res.x[sel]))])
    if res.status == 0:
        return VerifyResult(upper, min(lower, upper), upper, "optimal", x_adv, target, dt, msg)
    status = "time_limit" if res.status == 1 else "error"
    return VerifyResult(upper, min(max(lower, 0.0), upper), upper, status, x_adv, target, dt, msg)


class PropertyMILP(NamedTuple):
    """The MILP's answer to 'is some input of the box unsafe?'.

    status: 'verified' (no input of the box is unsafe: every disjunct's MILP proved its unsafe margin < 0),
      'counterexample' (x found, unsafe in float64 with the network's own evaluation), 'time_limit' or 'error'.
    lower_bound: a proven lower bound of min over the box of the safety margin (> 0 proves the property; the
      convention of `robustjax.complete.PropertyResult`). x: `[d]` the counterexample or None. time_s: wall time.
    """
    status: str
    lower_bound: float
    x: np.ndarray | None
    time_s: float


def property_milp(layers: Sequence[Layer], prop, *, time_limit: float = 60.0, bounds=None,
                  bound_method: str = "crown", constrained: bool = False) -> PropertyMILP:
    """Complete verification of a `vnnlib.Property` on a Dense / Affine / ReLU chain by MILP (HiGHS).

    Per disjunct (A, b) (unsafe iff A f(z) <= b): max_z min_rows (b - A f(z)) over the box, i.e. min t with
    A f(z) - b <= t row by row; the property holds iff the optimum t > 0 for every disjunct, and a proven dual
    bound > 0 already decides it. bounds: precomputed `layer_bounds` over the box (e.g. the caller's CROWN
    bounds), else computed with bound_method. The time limit is shared by the disjuncts.
    constrained: the bounds also restrict the inputs (e.g. a branch-and-bound subdomain's split signs as bounds
    of pre-activations), so HiGHS may find no input satisfying them: the property then holds on that set
    ('verified', lower bound +inf). Without it, an infeasible encoding is an error (the box is never empty).
    """
    import time
    t0 = time.perf_counter()
    layers = chain_layers(layers, "property_milp")
    time_limit = validate.positive_float(time_limit, "time_limit", allow_inf=True)
    lo, hi = np.asarray(prop.lo, np.float64), np.asarray(prop.hi, np.float64)
    if bounds is None:
        bounds = layer_bounds(layers, 0.5 * (lo + hi), lo, hi, method=bound_method)
    worst = np.inf
    for A, b in prop.unsafe:
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            return PropertyMILP("time_limit", min(worst, 0.0), None, time.perf_counter() - t0)
        out_lo, out_hi = bounds[-1]
        row_lo = np.minimum(A, 0) @ out_hi + np.maximum(A, 0) @ out_lo - b
        if np.max(row_lo) > 0:                       # interval bounds alone exclude this disjunct
            worst = min(worst, float(np.max(row_lo)))
            continue
        m = _Model()
        z = m.add_vars(lo.size, lo, hi)
        y = _encode(m, layers, z, (lo, hi), bounds)
        t = m.add_vars(1, float(np.max(row_lo)), np.inf, cost=1.0)
        k = A.shape[1]
        cols = np.concatenate([np.broadcast_to(y, (len(b), k)), np.repeat(t, len(b))[:, None]], 1)
        m.add_rows(cols, np.concatenate([A, -np.ones((len(b), 1))], 1), -np.inf, b)
        res = m.solve(left, 1e-9)
        dual = getattr(res, "mip_dual_bound", None)
        if res.status == 2:   # the encoding of a nonempty box is always feasible: never read this as 'verified'
            if constrained:
                continue
            return PropertyMILP("error", -np.inf, None, time.perf_counter() - t0)
        if res.x is not None:
            x = np.clip(res.x[z], lo, hi)
            out = forward(layers, x[None])[0]
            if prop.violated_by(out):
                return PropertyMILP("counterexample", -float(np.min(b - A @ out)), x, time.perf_counter() - t0)
        if res.status == 0 and res.fun is not None:
            lower = float(res.fun) if dual is None or not np.isfinite(dual) else float(min(dual, res.fun))
        else:
            lower = float(dual) if dual is not None and np.isfinite(dual) else float(np.max(row_lo))
        worst = min(worst, lower)
        if lower <= 0:   # not proven; at optimality a point the float64 network does not confirm: tolerance
            return PropertyMILP("time_limit" if res.status == 1 else "error", lower, None, time.perf_counter() - t0)
    return PropertyMILP("verified", worst, None, time.perf_counter() - t0)


def tighten_bounds_milp(layers: Sequence[Layer], lo, hi, bounds: list, layer: int, *, time_limit: float = 1.0,
                        deadline: float | None = None, workers: int = 2, pad: float = 1e-5):
    """Tighter bounds of the units of layers[layer]'s output that bounds[layer] leaves unstable (lo < 0 < hi), by
    one MILP per unit and side over the input box (ERAN's MILP refinement; Singh et al., "Boosting robustness
    certification of neural networks", ICLR 2019).

    layers: a chain (`chain_layers`); lo, hi `[d]` the input box; bounds: [(lo, hi)] `[width]` float64 of every
    layer's output over the box (sound, e.g. `layer_bounds` or CROWN's), the big-M constants of the layers
    below `layer`. Each MILP maximizes or minimizes one unit for time_limit seconds (HiGHS, `workers` solves
    at a time in threads); its proven dual bound, moved outward by pad (1 + |v|) against the solver's
    tolerances, replaces the unit's bound where tighter. Units not reached before `deadline`
    (time.perf_counter()) keep their bounds. Returns (lo, hi) `[width]` float64, inside bounds[layer]: as
    sound as the given bounds and HiGHS's dual bound."""
    import time
    from concurrent.futures import ThreadPoolExecutor
    layers = chain_layers(layers, "tighten_bounds_milp")
    lo, hi = np.asarray(lo, np.float64).reshape(-1), np.asarray(hi, np.float64).reshape(-1)
    L, U = (np.array(v, np.float64).reshape(-1) for v in bounds[layer])
    m = _Model()
    z = m.add_vars(lo.size, lo, hi)
    y = _encode(m, layers[:layer + 1], z, (lo, hi), bounds[:layer + 1])
    problem = m.arrays()
    units = np.where((L < 0) & (U > 0))[0]
    units = units[np.argsort(np.minimum(-L[units], U[units]) / (U[units] - L[units]))]   # nearest to stable first

    def solve(task):
        i, sign = task
        if deadline is not None and time.perf_counter() > deadline:
            return None
        c = np.zeros(len(m.lb))
        c[y[i]] = sign
        res = optimize.milp(c, **problem, options={"time_limit": time_limit, "disp": False})
        dual = getattr(res, "mip_dual_bound", None)
        if res.status == 0 and res.fun is not None:
            dual = res.fun if dual is None or not np.isfinite(dual) else min(dual, res.fun)
        if dual is None or not np.isfinite(dual):
            return None
        return sign * (float(dual) - pad * (1.0 + abs(float(dual))))

    tasks = [(int(i), s) for i in units for s in (1.0, -1.0)]
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        for (i, sign), v in zip(tasks, pool.map(solve, tasks)):
            if v is None:
                continue
            if sign > 0:
                L[i] = max(L[i], v)
            else:
                U[i] = min(U[i], v)
    return L, U


# ----------------------------------------------------------------------------------------------
# Exact l2 in 2-D by walking linear regions
# ----------------------------------------------------------------------------------------------


def region_affine(layers: Sequence[Layer], z) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The linear region of the point z `[d]`: (S `[d, n]`, s0 `[n]`, F `[d, K]`, f0 `[K]`), float64.

    Pre-activations (switches) on the region are z @ S + s0 (their signs at z define it: sign(s(z)) (z S + s0)
    >= 0), logits z @ F + f0: `network.region_map` of the chain.
    """
    z = np.asarray(z, np.float64).reshape(-1)
    graph = network.as_graph(layers)
    r = network.region_map(graph if graph.input_shape is not None else graph._replace(input_shape=(z.size,)), z)
    return r.S, r.s0, r.F, r.f0


def _clip_polygon(poly, tags, a, b, tag):
    """Sutherland-Hodgman: keep {v : a.v + b >= 0}; poly `[k, 2]`; tags[i] labels edge poly[i] -> poly[i+1]."""
    out, out_tags = [], []
    k = len(poly)
    for i in range(k):
        P, Q = poly[i], poly[(i + 1) % k]
        fp, fq = a @ P + b, a @ Q + b
        if fp >= 0:
            out.append(P)
            if fq >= 0:
                out_tags.append(tags[i])
            else:
                out_tags.append(tags[i])
                out.append(P + (Q - P) * fp / (fp - fq))
                out_tags.append(tag)
        elif fq >= 0:
            out.append(P + (Q - P) * fp / (fp - fq))
            out_tags.append(tags[i])
    return (np.array(out), out_tags) if len(out) >= 3 else (np.zeros((0, 2)), [])


def _point_polygon_distance(x, poly):
    """l2 distance from x `[2]` to a convex polygon `[k, 2]` (counter-clockwise or clockwise); nearest point."""
    k = len(poly)
    area = 0.5 * abs(np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1]))
    inside = area > 0
    sgn = 0.0
    for i in range(k):
        e = poly[(i + 1) % k] - poly[i]
        cr = e[0] * (x[1] - poly[i][1]) - e[1] * (x[0] - poly[i][0])
        if abs(cr) > 0:
            if sgn == 0:
                sgn = np.sign(cr)
            elif np.sign(cr) != sgn:
                inside = False
                break
    if inside:
        return 0.0, x.copy()
    best, arg = np.inf, None
    for i in range(k):
        P, Q = poly[i], poly[(i + 1) % k]
        e = Q - P
        t = np.clip((x - P) @ e / max(e @ e, 1e-300), 0.0, 1.0)
        q = P + t * e
        dq = np.linalg.norm(x - q)
        if dq < best:
            best, arg = dq, q
    return best, arg


class RegionsResult(NamedTuple):
    """Exact minimal l2 adversarial distance in 2-D: distance, x_adv `[2]` (on the boundary), target,
    and n_regions visited."""
    distance: float
    x_adv: np.ndarray | None
    target: int
    n_regions: int


def min_adversarial_l2_2d(layers: Sequence[Layer], x, label: int, *, box=None,
                          max_regions: int = 100000) -> RegionsResult:
    """The exact minimal l2 adversarial perturbation of a ReLU network with 2-D inputs.

    Walks all linear regions inside the box by breadth-first search across their edges (each region is
    the polygon box ∩ {sign(s_j(z0)) s_j(z) >= 0}, s_j the pre-activations, affine on the region), and on
    each one computes min ||z - x||_2 over region ∩ {f_t >= f_c} exactly (a point-to-polygon distance)
    for every t != c. Exact up to float64 rounding (regions narrower than ~1e-9 may be missed).
    """
    if np.size(x) != 2:
        raise ValueError(f"min_adversarial_l2_2d needs 2-D inputs, got x with {np.size(x)} entries")
    layers = chain_layers(layers, "min_adversarial_l2_2d")
    max_regions = validate.positive_int(max_regions, "max_regions")
    x, lo, hi, logits = _example(x, layers, label, box, "min_adversarial_l2_2d")
    if int(np.argmax(logits)) != label:
        return RegionsResult(0.0, x.copy(), int(np.argmax(logits)), 0)
    box_poly = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    scale = float(np.max(hi - lo))
    seen, queue = set(), [x.copy()]
    best, best_z, best_t = np.inf, None, -1
    K = logits.shape[0]
    while queue:
        z0 = queue.pop()
        S, s0, F, f0 = region_affine(layers, z0)
        pre = z0 @ S + s0
        sig = np.where(pre >= 0, 1.0, -1.0)
        keyp = tuple((sig > 0).tolist())
        if keyp in seen:
            continue
        seen.add(keyp)
        if len(seen) > max_regions:
            raise RuntimeError(f"more than {max_regions} linear regions")
        poly, tags = box_poly.copy(), [-1, -1, -1, -1]
        for j in range(S.shape[1]):
            a = sig[j] * S[:, j]
            if np.linalg.norm(a) < 1e-14:
                continue
            poly, tags = _clip_polygon(poly, tags, a, sig[j] * s0[j], j)
            if len(poly) == 0:
                break
        if len(poly) == 0:
            continue
        for t in range(K):
            if t == label:
                continue
            a, b = F[:, t] - F[:, label], f0[t] - f0[label]
            sub, _ = _clip_polygon(poly, [0] * len(poly), a, b, 0)
            if len(sub):
                dist, q = _point_polygon_distance(x, sub)
                if dist < best:
                    best, best_z, best_t = dist, q, t
        for i, tag in enumerate(tags):   # cross each non-box edge at its midpoint
            if tag < 0:
                continue
            P, Q = poly[i], poly[(i + 1) % len(poly)]
            if np.linalg.norm(Q - P) < 1e-12 * scale:
                continue
            mid = (P + Q) / 2
            nrm = sig[tag] * S[:, tag]
            step = -nrm / np.linalg.norm(nrm) * 1e-7 * scale
            queue.append(mid + step)
    return RegionsResult(best, best_z, best_t, len(seen))


def _milp_rows(layers, kw, x, labels):
    """`[n]` object array of VerifyResults for rows x `[n, ...]`, labels `[n]`."""
    out = np.empty(len(x), object)
    for i in range(len(x)):
        out[i] = min_adversarial_milp(layers, x[i], int(labels[i]), **kw)
    return out


def min_adversarial_milp_batch(layers: Sequence[Layer], x, labels, *, processes: int | None = None,
                               progress: bool = False, **kwargs) -> list[VerifyResult]:
    """`min_adversarial_milp` for every row of x `[n, ...]` with labels `[n]`, spread over a pool of
    `processes` worker processes (robustjax.parallel.map_rows, one point per task; None = one per core, 1 =
    inline).
    Each MILP is single-threaded CPU work, so the pool scales with the cores. Returns results in order."""
    import functools

    from robustjax import parallel
    x = np.asarray(validate.batch(x, "x"), np.float64)
    labels = validate.labels(labels, x.shape[0])
    fn = functools.partial(_milp_rows, chain_layers(layers, "min_adversarial_milp_batch"), kwargs)
    if x.shape[0] == 0:
        return []
    return list(parallel.map_rows(fn, (x, labels), processes=processes, chunks=x.shape[0], cpu=True,
                                  progress=progress, desc="MILP"))
