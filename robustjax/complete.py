"""Complete verification of a property: verified, a counterexample, or an honest unknown / timeout.

    result = verify_property(net, prop, time_limit=300)        # prop: robustjax.vnnlib.Property
    result = verify_property(net, (lo, hi), label, time_limit=60)

Stages, in order, each only while time is left: (1) falsify: PGD with the property's per-pixel box and random
restarts, then the region attack (for 'argmax = c' properties of piecewise-affine nets) or PGD on the unsafe
margin (any linear property); (2) prove with CROWN, then alpha-CROWN with every intermediate bound's and the
output's slopes optimized per row (`alpha_steps` projected Adam steps; nets without ReLUs, which cannot be
branched on, get rounds of more steps until the time is spent); (3) for chains of Dense / Affine / ReLU /
Flatten layers with at most `milp_max_unstable` unstable ReLUs under those bounds: the exact MILP of
`verify.property_milp` (HiGHS, big-M constants from those bounds) with `milp_share` of the time left; then,
or otherwise, branch and bound over ReLU splits: the open subdomains with the weakest bounds are split on an
unstable unit of the earliest layer that has one (`bab_branching="shallow"`; "babsr": the unit whose relaxation
costs the bound most anywhere; while fewer than `bab_batch` are open, each on its several best units at once,
so that the children fill a batch), the children bounded in one batch by beta-CROWN (the units unstable in
each child's parent re-bounded by CROWN with the splits clamped and the parent's bounds known, the whole batch's
rows packed into passes of a fixed size, `bab_intermediate="crown"`, or
the parent's bounds clamped and tightened by IBP, "ibp"; per-row slopes and one multiplier per split optimized
by `bab_steps` Adam steps),
until every subdomain is proven, a candidate point violates the property, or the time is up; a subdomain
with nothing left to split (chains only) is decided exactly by the MILP of its split signs, an LP. Optional
(`refine_layers` > 0, chains only): before branching, ERAN's MILP refinement of the intermediate bounds of the
first hidden layers (`verify.tighten_bounds_milp`, `refine_time` s per unit and side, `refine_share` of the
time left), then alpha-CROWN on the refined bounds.

Never a wrong answer: 'verified' rests on sound bounds (float64, padded for rounding; see robustjax.bounds),
'counterexample' only for a point inside the box whose outputs, evaluated in float64 from the network's
weights, lie in the unsafe set; everything else is 'unknown' or 'timeout', with the best lower bound found.
"""
from __future__ import annotations

import dataclasses
import functools
import heapq
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate, vnnlib
from robustjax.bounds import crown, propagate
from robustjax.network.evaluate import evaluate, evaluate_numpy
from robustjax.network.function import Structure, as_function, floating_as, join, split
from robustjax.network.graph import Graph, ReLU

STATUSES = ("verified", "counterexample", "unknown", "timeout")


class PropertyResult(NamedTuple):
    """status: 'verified' | 'counterexample' | 'unknown' | 'timeout'.
    counterexample: `[*input_shape]` float64 point (None unless status is 'counterexample'); outputs: its logits.
    lower_bound: the best proven lower bound of min over the box of the safety margin (> 0 proves the property;
      the margin of a disjunct is the largest of b - A f over its rows, negated: see `Property.unsafe_margin`).
    stage: what decided ('pgd', 'region', 'crown', 'alpha-crown', 'refine' (alpha-CROWN on MILP-refined
      intermediate bounds), 'milp', 'bab', or '' when undecided).
    domains: branch-and-bound subdomains bounded. time_s: wall time.
    """
    status: str
    counterexample: np.ndarray | None
    outputs: np.ndarray | None
    lower_bound: float
    stage: str
    domains: int
    time_s: float


def as_property(spec, label=None, num_classes: int | None = None) -> vnnlib.Property:
    """A `vnnlib.Property` from one (label must then be None: the property names its own outputs), or from a
    finite input box (lo, hi) and a label ('argmax f = label')."""
    if isinstance(spec, vnnlib.Property):
        if label is not None:
            raise ValueError(f"label must be None with a vnnlib.Property (its output constraints are the property), "
                             f"got {label!r}")
        return spec
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
        raise ValueError("spec must be a vnnlib.Property or an input box (lo, hi) with a label")
    if label is None or num_classes is None:
        raise ValueError("an input box needs a label (and the network's number of classes)")
    lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in spec)
    if lo.shape != hi.shape:
        raise ValueError(f"lo {lo.shape} and hi {hi.shape} must have one shape")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"the input box must be finite; got {int(np.sum(~np.isfinite(lo)) + np.sum(~np.isfinite(hi)))}"
                         " NaN or infinite bounds")
    if np.any(lo > hi):
        raise ValueError(f"the input box must have lo <= hi; lo > hi at {int(np.sum(lo > hi))} coordinates")
    c = int(validate.labels(np.asarray([label]), 1, num_classes, name="label")[0])
    unsafe = tuple((np.eye(num_classes)[[c]] - np.eye(num_classes)[[j]], np.zeros(1))
                   for j in range(num_classes) if j != c)
    return vnnlib.Property(lo, hi, unsafe, num_classes)


def check_fits(graph: Graph, prop: vnnlib.Property) -> None:
    """ValueError unless the property's inputs and outputs match the network's (flattened input size, classes)."""
    d = int(np.prod(graph.input_shape))
    K = int(np.prod(crown.node_shapes(graph, graph.input_shape)[-1]))
    if prop.lo.shape != (d,):
        raise ValueError(f"the property has {prop.lo.shape[0]} inputs, the network {d}")
    if prop.num_outputs != K:
        raise ValueError(f"the property constrains {prop.num_outputs} outputs, the network has {K}")


def _spec(prop: vnnlib.Property):
    """Stacked rows (A [m, K], b [m]) and the disjunct of each row."""
    A = np.concatenate([a for a, _ in prop.unsafe])
    b = np.concatenate([bb for _, bb in prop.unsafe])
    group = np.concatenate([np.full(len(bb), i) for i, (_, bb) in enumerate(prop.unsafe)])
    return A, b, group


def _safety(low_rows, group, n_groups):
    """min over disjuncts of max over its rows of (lower bound of A f - b): > 0 proves the property."""
    per = np.full(low_rows.shape[:-1] + (n_groups,), -np.inf)
    for g in range(n_groups):
        per[..., g] = np.max(low_rows[..., group == g], -1)
    return np.min(per, -1)


def _check(graph, prop, x):
    """x if it is a float64-verified counterexample (inside the box, outputs unsafe), else None."""
    return _check_many(graph, prop, np.asarray(x).reshape(1, -1))


def _check_many(graph, prop, xs):
    """The first row of xs `[n, d]` (clipped to the box) that is a float64-verified counterexample, as (x, outputs),
    else None: one batched float64 forward pass and `prop.violated_rows`."""
    if not len(xs):
        return None
    xs = np.clip(np.asarray(xs, np.float64).reshape(len(xs), -1), prop.lo, prop.hi)
    out = evaluate_numpy(graph, xs.reshape((len(xs),) + tuple(graph.input_shape)))
    hits = np.flatnonzero(prop.violated_rows(out))
    return (xs[hits[0]], out[hits[0]]) if hits.size else None


@functools.partial(jax.jit, static_argnames=("structure", "restarts", "steps"))
def _pgd_unsafe(structure, weights, A, b, onehot, lo, hi, key, *, restarts: int, steps: int):
    """(points `[restarts, d]`, their unsafe margins `[restarts]`) after `steps` signed-gradient ascent steps
    on the unsafe margin inside the box [lo, hi]; the first start is the box's center. The weights are arguments
    (`network.split`): one program per architecture, property shape and step counts."""
    graph = join(structure, weights)
    shape = tuple(graph.input_shape)

    def objective(xf):
        slack = b - evaluate(graph, xf.reshape((-1,) + shape)) @ A.T                    # [n, m]
        return jnp.max(jnp.min(jnp.where(onehot[None], slack[:, None, :], jnp.inf), -1), -1)

    x = jax.random.uniform(key, (restarts, lo.shape[0]), jnp.float32, lo, hi)
    x = x.at[0].set(0.5 * (lo + hi))
    step = 0.25 * (hi - lo)

    def body(t, x):
        g = jax.grad(lambda v: jnp.sum(objective(v)))(x)
        return jnp.clip(x + step * (0.97 ** t) * jnp.sign(g), lo, hi)
    x = jax.lax.fori_loop(0, steps, body, x)
    return x, objective(x)


def _falsify(graph, prop, key, restarts, steps):
    """PGD ascent on each disjunct's unsafe margin min_r (b_r - A_r f) inside the box, random starts; the
    highest-ranked (by the float32 margin) counterexample that float64 confirms (`_check_many`), else None."""
    A, b, group = _spec(prop)
    structure, arrays = split(graph)
    onehot = jnp.asarray(np.eye(len(prop.unsafe))[group].T, bool)          # [G, m]
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    xs, vals = _pgd_unsafe(structure, floating_as(arrays, jnp.float32), f32(A), f32(b), onehot, f32(prop.lo),
                           f32(prop.hi), key, restarts=restarts, steps=steps)
    return _check_many(graph, prop, np.asarray(xs)[np.argsort(-np.asarray(vals))])


def _region_falsify(graph, prop, key):
    label = prop.robustness_label()
    if label is None or not graph.is_piecewise_affine():
        return None
    from robustjax.attacks import region
    shape = tuple(graph.input_shape)
    x0 = (0.5 * (prop.lo + prop.hi)).reshape((1,) + shape).astype(np.float32)
    box = (prop.lo.reshape((1,) + shape), prop.hi.reshape((1,) + shape))
    res = region(as_function(graph), x0, np.array([label]), p=np.inf, key=key, box=box, n_regions=20)
    if res.success[0]:
        return _check(graph, prop, res.x_adv[0])
    return None


_FULL_ROWS = 1024


def _padded_rows(rows, n: int):
    """(rows padded by repeating the first row, or unit 0 where there is none; the mask of the real ones): to all
    n units of the layer where n <= _FULL_ROWS (every property of such a network then shares one batch program),
    else to the next power of two (a subdomain keeps its bounds at the rows, so memory follows the count). A
    repeated row carries its original's values everywhere (every array indexed by rows is gathered by rows), and
    its branching score is masked."""
    if n <= _FULL_ROWS:
        size = n
    else:
        size = min(n, 1 << max(0, int(rows.size - 1).bit_length())) if rows.size else 1
    pad = np.full(size - rows.size, rows[0] if rows.size else 0)
    return np.concatenate([rows, pad]).astype(np.int64), np.arange(size) < rows.size


@dataclasses.dataclass(frozen=True)
class _BaBStatic:
    """What a branch-and-bound batch program is compiled for (hashable): the network's structure
    (`network.split`), node shapes, ReLU (node, input) pairs and the options."""
    structure: Structure
    shapes: tuple
    relus: tuple
    steps: int
    lr: float
    intermediate: str
    branching: str
    chunk: int


@functools.partial(jax.jit, static_argnames=("static",))
def _bab_bound(static: _BaBStatic, weights, A, b, set1, root, rows, real, splits, plo, phi):
    """One batch of subdomains (see `_BaB`): (lower bounds of A f - b `[B, m]`, infeasible `[B]`, candidates
    `[B, m, d]`, branching scores `{z: [B, u_z]}`, own bounds `{z: ([B, u_z], [B, u_z])}`); the weights, the
    property and the root's bounds are arguments, so one program serves every property of a network whose
    padded row counts (`_padded_rows`) agree."""
    graph = join(static.structure, weights)
    shapes = static.shapes
    B = splits[static.relus[0][1]].shape[0]
    c, e, lo, hi = set1
    s = crown.InputSet(jnp.broadcast_to(c, (B,) + c.shape), jnp.full((B,), 1e30), jnp.broadcast_to(lo, (B,) + lo.shape),
                       jnp.broadcast_to(hi, (B,) + hi.shape), np.inf)
    parent = [crown.Interval(*(jnp.broadcast_to(w, (B,) + w.shape[1:]) for w in (v.lo, v.hi))) for v in root]
    for z in plo:           # the parent's bounds of the units unstable at the root; the root's elsewhere
        u = rows[z]
        parent[z] = crown.Interval(*(v.reshape(B, -1).at[:, u].set(q).reshape(v.shape)
                                     for v, q in ((parent[z].lo, plo[z]), (parent[z].hi, phi[z]))))
    if static.intermediate == "crown":    # the units unstable in the parent (others: stable, exact relaxation)
        active = {z: jnp.zeros((B, int(np.prod(shapes[z]))), bool).at[:, rows[z]].set(
            (plo[z] < 0) & (phi[z] > 0)).reshape((B,) + tuple(shapes[z])) for z in plo}
        bounds, _, _ = crown.intermediate_bounds(graph, s, shapes, chunk=static.chunk, given=parent,
                                                 splits=splits, active=active)
        infeasible = jnp.zeros((B,), bool)
        for v in bounds:
            infeasible |= jnp.any((v.lo > v.hi).reshape(B, -1), -1)
    else:
        bounds, infeasible = crown.refine(graph, parent, splits)
    relax = crown.relaxations_for(graph, bounds)
    C = jnp.broadcast_to(A, (B,) + A.shape)
    m, last, count = C.shape[1], len(graph.nodes), crown.n_ops(shapes)
    dtype = c.dtype

    def passes(params, record=None):
        alphas, betas = params
        extra = {z: -betas[z] * splits[z][:, None].astype(dtype) for z in betas}
        Lin, const, mag = crown.backward(graph, last, C, shapes, crown.row_relax(graph, relax, bounds, alphas), record,
                                         extra=extra)
        return crown.concretize(s, Lin, const, mag, count) - b, Lin

    slopes = crown.row_slopes(graph, relax, bounds, last + 1, m)
    init = (slopes, {z: jnp.zeros((B, m) + tuple(shapes[z]), dtype) for _, z in static.relus})
    low = jnp.maximum(passes(init)[0], crown.ibp_spec_lower(bounds, C) - b)
    params = init
    if static.steps > 0:
        def project(q):
            return crown.project_slopes(q[0]), {z: jnp.maximum(v, 0.0) for z, v in q[1].items()}
        low, params = crown.ascend(lambda q: passes(q)[0], init, project, static.steps, static.lr, low, final=True)
    record = {}
    _, Lin = passes(params, record)
    x_star = jnp.where(Lin.reshape(B, m, -1) > 0, s.lo[:, None], s.hi[:, None])
    kept = {z: (bounds[z].lo.reshape(B, -1)[:, rows[z]], bounds[z].hi.reshape(B, -1)[:, rows[z]])
            for _, z in static.relus}
    return low, infeasible, x_star, _scores(static.relus, static.branching, rows, real, bounds, splits, record), kept


def _scores(relus, branching, rows, real, bounds, splits, record):
    """Branching scores `{z: [B, u_z]}` of the units unstable at the root (-1: not a candidate, or a padded
    row) from the bounds and the output pass's Lambda at each ReLU (record)."""
    scores = {}
    for depth, (k, z) in enumerate(relus):
        l, u = bounds[z].lo, bounds[z].hi
        B = l.shape[0]
        unstable = (l < 0) & (u > 0) & (splits[z] == 0)
        intercept = jnp.where(unstable, u * (-l) / jnp.where(unstable, u - l, 1.0), 0.0)
        lam = record.get(k)
        w = jnp.sum(jnp.maximum(-lam, 0.0), 1) if lam is not None else jnp.ones_like(l)
        score = w * intercept + 1e-12 * intercept
        if branching == "shallow":     # the earliest layer with an unstable unit first, BaBSR within it
            score = (len(relus) - depth) + score / (1.0 + score)
        scores[z] = jnp.where(real[z], jnp.where(unstable, score, -1.0).reshape(B, -1)[:, rows[z]], -1.0)
    return scores


class _BaB:
    """Batched branch and bound over ReLU splits. Intermediate bounds of a subdomain: intermediate="crown"
    re-bounds by CROWN, with the split units clamped, every unit that is unstable in its parent (so a split in an
    early layer tightens every later layer; a unit stable in the parent stays stable, and its relaxation is exact
    whatever its bounds), intersected with its parent's bounds; the rows of the whole batch are packed into
    backward passes of `chunk` rows, so the work follows the count of such units. "ibp" clamps the parent's
    bounds and tightens them by IBP only.
    The output bound by beta-CROWN: per-row ReLU slopes (alpha) and one multiplier per split unit (beta >= 0,
    the Lagrangian term -beta * sign * z of the split constraint sign * z >= 0) optimized by `steps` projected
    Adam steps per batch. Every iterate is a sound bound on the subdomain (Wang et al., "Beta-CROWN", NeurIPS
    2021, Theorem 3.1); the best per row is kept. branching: "babsr" splits the unit whose relaxation costs the
    output bound most (BaBSR's score); "shallow" the best-scoring unit of the earliest layer that has unstable
    units (on deep nets a split there tightens every later layer's bounds).
    The batch program (`_bab_bound`) takes the weights, the property and the root's bounds as arguments, and the
    units unstable at the root (`rows`, per ReLU layer) padded to the layer's width or, for wide layers, to
    power-of-two buckets (`_padded_rows`; `real` marks the real ones): a network's properties share one program
    where their row counts agree so."""

    def __init__(self, graph, prop, root_bounds, batch, steps=20, lr=0.1, intermediate="crown", branching="shallow",
                 chunk=256):
        self.graph = graph
        self.A, self.b, self.group = _spec(prop)
        self.G = len(prop.unsafe)
        self.relus = [(k, n.inputs[0]) for k, n in enumerate(graph.nodes, 1) if isinstance(n.layer, ReLU)]
        self.shapes = crown.node_shapes(graph, graph.input_shape)
        self.root = root_bounds
        self.rows, self.real = {}, {}
        for _, z in self.relus:
            rows = np.flatnonzero((np.asarray(root_bounds[z].lo) < 0) & (np.asarray(root_bounds[z].hi) > 0))
            self.rows[z], self.real[z] = _padded_rows(rows, int(np.prod(self.shapes[z])))
        self.batch = batch
        self.branching = branching
        structure, arrays = split(graph)
        self._static = _BaBStatic(structure, tuple(self.shapes), tuple(self.relus), steps, lr, intermediate,
                                  branching, chunk)
        lo, hi = jnp.asarray(prop.lo), jnp.asarray(prop.hi)
        self._args = (floating_as(arrays, jnp.float64), jnp.asarray(self.A), jnp.asarray(self.b),
                      (0.5 * (lo + hi), hi - lo, lo, hi),
                      [crown.Interval(jnp.asarray(v.lo), jnp.asarray(v.hi)) for v in root_bounds],
                      {z: jnp.asarray(v) for z, v in self.rows.items()},
                      {z: jnp.asarray(v) for z, v in self.real.items()})

    def root_scores(self) -> dict:
        """The root's branching scores `{z: [u_z]}` (as `bound` gives a subdomain's) from its own bounds and one
        CROWN output pass with its slopes (eager, one example): no batch is spent on the root."""
        bounds = [crown.Interval(jnp.asarray(b.lo), jnp.asarray(b.hi)) for b in self.root]
        relax = crown.relaxations_for(self.graph, bounds)
        record = {}
        crown.backward(self.graph, len(self.graph.nodes), jnp.asarray(self.A)[None], self.shapes, relax, record)
        zero = {z: jnp.zeros((1,) + tuple(self.shapes[z]), jnp.int8) for _, z in self.relus}
        scores = _scores(self.relus, self.branching, self.rows, self.real, bounds, zero, record)
        return {z: np.asarray(v[0]) for z, v in scores.items()}

    def root_domain(self):
        """The root's splits (none) and its bounds of the units unstable at the root, in the form `bound` takes."""
        zero = {z: np.zeros(self.shapes[z], np.int8) for _, z in self.relus}
        return zero, {z: tuple(np.asarray(v).reshape(-1)[self.rows[z]] for v in (self.root[z].lo, self.root[z].hi))
                      for _, z in self.relus}

    def bound(self, splits: list, given: list):
        """splits: list of {z: array}; given: list of {z: (lo [u_z], hi [u_z])}, bounds of each subdomain's units
        unstable at the root (`self.rows`, padded) known to hold on it (its parent's) -> (safety [n], infeasible [n],
        candidates [n, m, d], per subdomain: its branching scores of those units {z: [u_z]} (-1: not a candidate),
        per subdomain: its own bounds of those units, in given's form)."""
        n = len(splits)
        size = self.batch * 2
        pad = (-n % size)
        splits, given = splits + [splits[-1]] * pad, given + [given[-1]] * pad
        out = []
        for i in range(0, n + pad, size):
            stacked = {z: jnp.asarray(np.stack([sp[z] for sp in splits[i:i + size]])) for _, z in self.relus}
            plo, phi = ({z: jnp.asarray(np.stack([g[z][j] for g in given[i:i + size]])) for _, z in self.relus}
                        for j in (0, 1))
            out.append(jax.tree.map(np.asarray, _bab_bound(self._static, *self._args, stacked, plo, phi)))
        cat = lambda j: jax.tree.map(lambda *v: np.concatenate(v)[:n], *[o[j] for o in out])  # noqa: E731
        each = lambda tree: [jax.tree.map(lambda v: v[i], tree) for i in range(n)]  # noqa: E731
        return _safety(cat(0), self.group, self.G), cat(1), cat(2), each(cat(3)), each(cat(4))


def verify_property(net, spec, label=None, *, time_limit: float = 60.0, key=None, method: str = "alpha-crown",
                    falsify_restarts: int = 64, falsify_steps: int = 50, bab_batch: int = 64,
                    milp_max_unstable: int = 400, milp_share: float = 0.5, alpha_steps: int = 20,
                    alpha_lr: float = 0.1, bab_steps: int = 20, refine_layers: int = 0, refine_time: float = 2.0,
                    refine_share: float = 0.4, bab_intermediate: str = "crown", bab_branching: str = "shallow",
                    progress: bool = False) -> PropertyResult:
    """Decides a property of a network within time_limit seconds (see the module docstring).

    net: a network Graph, layer list, logits_fn or ONNX path/model. spec: a `vnnlib.Property` or an input box
    (lo, hi) (flat or the input's shape) with `label` for 'every input of the box is classified as label'.
    """
    t0 = time.perf_counter()
    time_limit = validate.positive_float(time_limit, "time_limit")
    for name, value, allowed in (("method", method, ("crown", "alpha-crown")),
                                 ("bab_intermediate", bab_intermediate, ("crown", "ibp")),
                                 ("bab_branching", bab_branching, ("shallow", "babsr"))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    for name, value in (("falsify_restarts", falsify_restarts), ("falsify_steps", falsify_steps),
                        ("alpha_steps", alpha_steps), ("bab_steps", bab_steps), ("refine_layers", refine_layers),
                        ("milp_max_unstable", milp_max_unstable)):
        validate.positive_int(value, name, allow_zero=True)
    validate.positive_int(bab_batch, "bab_batch")
    for name, value in (("alpha_lr", alpha_lr), ("refine_time", refine_time)):
        validate.positive_float(value, name)
    for name, value in (("milp_share", milp_share), ("refine_share", refine_share)):
        if not 0.0 <= validate.positive_float(value, name, allow_zero=True) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    deadline = t0 + time_limit
    graph = _as_graph(net, spec)
    K = crown.node_shapes(graph, graph.input_shape)[-1][0]
    prop = as_property(spec, label, K)
    check_fits(graph, prop)
    key = jax.random.key(0) if key is None else validate.key(key)
    log = (lambda msg: print(f"verify_property: {msg} ({time.perf_counter() - t0:.1f} s)", flush=True)) if progress \
        else (lambda msg: None)

    def done(status, stage, lb=-np.inf, hit=None, domains=0):
        return PropertyResult(status, None if hit is None else hit[0], None if hit is None else hit[1], float(lb),
                              stage, domains, time.perf_counter() - t0)

    hit = _falsify(graph, prop, key, falsify_restarts, falsify_steps)
    if hit is not None:
        return done("counterexample", "pgd", hit=hit)
    log("PGD found no counterexample")
    if time.perf_counter() < deadline:
        hit = _region_falsify(graph, prop, jax.random.fold_in(key, 1))
        if hit is not None:
            return done("counterexample", "region", hit=hit)
    A, b, group = _spec(prop)
    x0 = (0.5 * (prop.lo + prop.hi)).reshape((1,) + tuple(graph.input_shape))
    box = (prop.lo.reshape(x0.shape), prop.hi.reshape(x0.shape))
    best, root = -np.inf, None
    branches = any(isinstance(n.layer, ReLU) for n in graph.nodes)
    rounds = [("crown", 0)] + ([("alpha-crown", alpha_steps)] if method == "alpha-crown" else [])
    while rounds:
        m, steps = rounds.pop(0)
        if time.perf_counter() > deadline:
            return done("timeout", "", best)
        t1 = time.perf_counter()
        low, root = _root_bounds(graph, x0, box, A, steps, alpha_lr)
        best = max(best, float(_safety(low - b, group, len(prop.unsafe))[0]))
        log(f"{m} ({steps} steps): lower bound {best:.4g}")
        if best > 0:
            return done("verified", m, best)
        rate = (time.perf_counter() - t1) / max(steps, 1)        # s per step, compilation included: an overestimate
        more = min(4 * steps, int(0.9 * (deadline - time.perf_counter()) / max(rate, 1e-9)))
        if m == "alpha-crown" and not branches and more > steps:
            rounds.append((m, more))            # no branching for smooth nets: spend the time on more steps
    if not branches:
        return done("unknown", "", best)
    if refine_layers > 0 and time.perf_counter() < deadline:
        stop = time.perf_counter() + refine_share * (deadline - time.perf_counter())
        refined = _refine_stage(graph, prop, root, x0, box, A, refine_layers, refine_time, stop, log)
        if refined is not None and time.perf_counter() < deadline:
            low, root = _root_bounds(graph, x0, box, A, alpha_steps if method == "alpha-crown" else 0, alpha_lr,
                                     given=refined)
            best = max(best, float(_safety(low - b, group, len(prop.unsafe))[0]))
            log(f"{method} on the refined bounds: lower bound {best:.4g}")
            if best > 0:
                return done("verified", "refine", best)
    milp = _milp_stage(graph, prop, root, milp_max_unstable, deadline, log, milp_share)
    if milp is not None:
        if milp.status == "counterexample":
            hit = _check(graph, prop, milp.x)
            if hit is not None:
                return done("counterexample", "milp", hit=hit)
        if milp.status == "verified":
            return done("verified", "milp", milp.lower_bound)
        best = max(best, milp.lower_bound)
        if milp.status != "time_limit" or time.perf_counter() > deadline:
            return done("timeout" if milp.status == "time_limit" else "unknown", "", best)
        log("MILP undecided in its share of the time: branch and bound")
    with jax.enable_x64(True):
        bab = _BaB(graph, prop, root, bab_batch, bab_steps, intermediate=bab_intermediate, branching=bab_branching)
        zero, known = bab.root_domain()
        heap = [(best, 0, zero, bab.root_scores(), known)]
        counter, domains, stuck = 1, 1, False
        while heap:
            if time.perf_counter() > deadline:
                return done("timeout", "", max(best, heap[0][0]), domains=domains)
            take = [heapq.heappop(heap) for _ in range(min(bab_batch, len(heap)))]
            # while few domains are open, split each on several units at once so that one batch is filled
            depth = max(1, int(np.floor(np.log2(2 * bab_batch / len(take)))))
            children, given = [], []
            for val, _, sp, sc, kn in take:
                units = _split_units(sc, [z for _, z in bab.relus], depth)
                if not units:
                    leaf = _leaf_milp(graph, prop, root, bab, sp, kn, deadline)
                    if leaf is None:
                        stuck = True
                    elif leaf != "verified":
                        return done("counterexample", "bab", hit=leaf, domains=domains)
                    continue
                for signs in np.array(np.meshgrid(*[(1, -1)] * len(units), indexing="ij")).reshape(len(units), -1).T:
                    child = {zz: v.copy() for zz, v in sp.items()}
                    for (z, j), sign in zip(units, signs):
                        child[z].reshape(-1)[bab.rows[z][j]] = sign
                    children.append(child)
                    given.append(kn)
            if not children:
                continue
            safety, infeasible, cand, scores, kept = bab.bound(children, given)
            domains += len(children)
            open_ = [i for i in range(len(children)) if not (infeasible[i] or safety[i] > 0)]
            hit = _check_many(graph, prop, cand[open_].reshape(-1, cand.shape[-1]))
            if hit is not None:
                return done("counterexample", "bab", hit=hit, domains=domains)
            for i in open_:
                heapq.heappush(heap, (float(safety[i]), counter, children[i], scores[i], kept[i]))
                counter += 1
            if progress and domains % (8 * bab_batch) < 2 * bab_batch:
                log(f"bab: {domains} domains, {len(heap)} open, worst bound {heap[0][0] if heap else 0:.4g}")
        if heap or stuck:
            return done("unknown", "", max(best, heap[0][0] if heap else best), domains=domains)
        return done("verified", "bab", 0.0, domains=domains)


def _split_units(scores: dict, nodes: list, depth: int) -> list:
    """The (node, index into scores[node]) pairs of the `depth` best branching scores (>= 0; fewer where fewer
    are), best first."""
    flat = np.concatenate([scores[z].reshape(-1) for z in nodes])
    offsets = np.cumsum([0] + [scores[z].size for z in nodes])
    best = np.argsort(-flat, kind="stable")[:depth]
    best = best[flat[best] >= 0]
    where = np.searchsorted(offsets, best, side="right") - 1
    return [(nodes[w], int(j - offsets[w])) for w, j in zip(where, best)]


def _leaf_milp(graph, prop, root, bab: _BaB, splits: dict, known: dict, deadline: float, limit: float = 10.0):
    """A subdomain with no unit left to split (each unit unstable at the root is split or stable in it): the
    network is affine on it, so `verify.property_milp` on its bounds (the root's, its own for the root's unstable
    units, each split's sign as a bound of its pre-activation; no binaries remain) decides it exactly: 'verified'
    (also where the splits leave no input of the box), a float64-checked counterexample (x, outputs), or None
    (undecided within min(limit, time left) s, or a graph that is not a chain)."""
    from robustjax import verify
    try:
        layers = verify.chain_layers(graph, "verify_property")
    except ValueError:
        return None
    bounds = [[np.array(v.lo[0], np.float64).reshape(-1), np.array(v.hi[0], np.float64).reshape(-1)]
              for v in root[1:]]
    for _, z in bab.relus:
        lo, hi = bounds[z - 1]
        rows = bab.rows[z][bab.real[z]]
        lo[rows], hi[rows] = known[z][0][bab.real[z]], known[z][1][bab.real[z]]
        sign = np.asarray(splits[z]).reshape(-1)
        lo[sign > 0], hi[sign < 0] = np.maximum(lo[sign > 0], 0.0), np.minimum(hi[sign < 0], 0.0)
        if np.any(lo > hi):
            return "verified"
    left = min(limit, deadline - time.perf_counter())
    if left <= 0:
        return None
    res = verify.property_milp(layers, prop, time_limit=left, bounds=[tuple(b) for b in bounds], constrained=True)
    if res.status == "verified":
        return "verified"
    return _check(graph, prop, res.x) if res.status == "counterexample" else None


def _root_bounds(graph, x0, box, A, alpha_steps: int, lr: float = 0.1, given=None):
    """(lower bounds `[1, m]` of A f over the box, every node's bounds) in float64: CROWN (alpha_steps = 0) or
    alpha-CROWN with every intermediate bound's and the output's slopes optimized by alpha_steps projected Adam
    steps (`propagate.compiled`: one program per architecture for any step count). given: known bounds of every node
    (e.g. the refinement stage's), intersected as they are computed."""
    with jax.enable_x64(True):
        s = propagate.input_set(x0, np.inf, np.inf, box)
        fn = propagate.compiled(graph, "alpha-crown" if alpha_steps > 0 else "crown", np.inf,
                                alpha_intermediate=True, alpha_lr=lr)
        if given is not None:
            given = [crown.Interval(jnp.asarray(v.lo, jnp.float64), jnp.asarray(v.hi, jnp.float64)) for v in given]
        low, bounds = fn(alpha_steps, s.center, s.eps, s.lo, s.hi, jnp.asarray(A[None], jnp.float64), given=given)
        return np.asarray(low), [crown.Interval(np.asarray(v.lo), np.asarray(v.hi)) for v in bounds]


def _refine_stage(graph, prop, root, x0, box, A, n_layers: int, unit_time: float, deadline, log):
    """ERAN-style MILP refinement (`verify.tighten_bounds_milp`) of the unstable pre-activations of the 2nd to
    (n_layers + 1)-th ReLU layers of a chain, in order, each followed by CROWN with the refined bounds given, so
    that the next layer's MILP and every later bound use them; until `deadline`. Returns the new bounds of every
    node, or None for a graph that is not a chain of Dense / Affine / ReLU / Flatten layers."""
    from robustjax import verify
    try:
        layers = verify.chain_layers(graph, "verify_property")
    except ValueError:
        return None
    pre = [k - 1 for k, layer in enumerate(layers) if isinstance(layer, ReLU) and k > 0][1:1 + n_layers]
    root = list(root)
    for j in pre:
        if time.perf_counter() > deadline:
            break
        flat = [(np.asarray(v.lo[0], np.float64).reshape(-1), np.asarray(v.hi[0], np.float64).reshape(-1))
                for v in root[1:]]
        before = int(np.sum((flat[j][0] < 0) & (flat[j][1] > 0)))
        lo, hi = verify.tighten_bounds_milp(layers, prop.lo, prop.hi, flat, j, time_limit=unit_time,
                                            deadline=deadline)
        shape = root[j + 1].lo.shape
        root[j + 1] = crown.Interval(lo.reshape(shape), hi.reshape(shape))
        _, root = _root_bounds(graph, x0, box, A, 0, given=root)
        log(f"MILP refinement of layer {j}: unstable {before} -> {int(np.sum((lo < 0) & (hi > 0)))}")
    return root


def _milp_stage(graph, prop, root, max_unstable, deadline, log, share: float = 1.0):
    """verify.property_milp on the root's bounds for an eligible chain (module docstring) with `share` of the time
    left, else None."""
    from robustjax import verify
    try:
        layers = verify.chain_layers(graph, "verify_property")
    except ValueError:
        return None
    bounds = [(np.asarray(b.lo[0], np.float64).reshape(-1), np.asarray(b.hi[0], np.float64).reshape(-1))
              for b in root[1:]]
    unstable = sum(int(np.sum((bounds[k - 1][0] < 0) & (bounds[k - 1][1] > 0)))
                   for k, layer in enumerate(layers) if isinstance(layer, ReLU) and k > 0)
    if unstable > max_unstable:
        log(f"{unstable} unstable ReLUs > milp_max_unstable = {max_unstable}: branch and bound")
        return None
    left = share * (deadline - time.perf_counter())
    log(f"MILP over {unstable} unstable ReLUs, {left:.0f} s")
    if left <= 0:
        return verify.PropertyMILP("time_limit", -np.inf, None, 0.0)
    return verify.property_milp(layers, prop, time_limit=left, bounds=bounds)


def _as_graph(net, spec) -> Graph:
    from pathlib import Path
    if isinstance(net, (str, Path)) or type(net).__name__ == "ModelProto":
        from robustjax.network.from_onnx import from_onnx
        return from_onnx(net)
    if isinstance(net, Graph):
        return net
    if isinstance(spec, vnnlib.Property):
        raise ValueError("give a network Graph or an ONNX model with a vnnlib.Property (a logits_fn has no input shape)")
    lo = np.asarray(spec[0])
    return propagate.as_network(net, lo.shape)
