"""CROWN and alpha-CROWN over a `robustjax.network.Graph`: backward linear bound propagation.

Zhang, Weng, Chen, Hsieh, Daniel, "Efficient neural network robustness certification with general activation
functions", NeurIPS 2018 (CROWN); Xu, Zhang, Wang, Wang, Jana, Lin, Hsieh, "Fast and complete: enabling
complete neural network verification with rapid and massively parallel incomplete verifiers", ICLR 2021
(alpha-CROWN: the relaxation slopes optimized by projected gradient ascent).

A lower bound of `C f(x')` over an input set is built by pulling `Lambda = C` back through the graph, one handler
per layer kind: affine layers by their exact transpose (a VJP), activations by the sound lines of
`relaxations` on their pre-activation interval, max-pools by the selection of the window's input with the
largest lower bound (exact where it dominates the window, else bounded above by the window's largest upper
bound). At the input, `Lambda x + c` is minimized over the set (`input_sets`). Intermediate pre-activation
bounds come from the same backward pass with Lambda = I, intersected with IBP, so CROWN is never looser than
IBP node by node. Everything runs in the dtype of the inputs (float64 from `robustjax.bounds`' public functions);
each result is padded by a bound on its own rounding error.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax.bounds import ibp, input_sets, relaxations, rounding
from robustjax.bounds.ibp import Interval
from robustjax.network.evaluate import JAX, NUMPY, evaluate_numpy, interpret, pool_windows
from robustjax.network.graph import (AFFINE_KINDS, Activation, Add, Affine, Concatenate, Conv, Dense, Flatten, Graph,
                                     MaxPool, ReLU, Reshape, Transpose)

NONLINEAR = (ReLU, Activation, MaxPool)


class InputSet(NamedTuple):
    """One l_p ball in a box per example: center, lo, hi `[B, d]` (flat), eps `[B]`, p in 1, 2, inf."""
    center: jax.Array
    eps: jax.Array
    lo: jax.Array
    hi: jax.Array
    p: float

    def interval(self) -> tuple:
        return jnp.maximum(self.center - self.eps[:, None], self.lo), jnp.minimum(self.center + self.eps[:, None], self.hi)


def _act_bounds(layer) -> relaxations.ActivationBounds:
    if isinstance(layer, ReLU):
        return relaxations.relu()
    if layer.kind not in ("sigmoid", "tanh", "softplus"):
        raise ValueError(f"bound propagation does not support activation {layer.kind!r} "
                         "(supported: relu, sigmoid, tanh, softplus)")
    return relaxations.get(layer.kind)


def _relax(layer, pre: Interval, slopes=None) -> relaxations.Relaxation:
    act = _act_bounds(layer)
    name = "relu" if isinstance(layer, ReLU) else layer.kind
    lo_s = up_s = None
    if slopes is not None:
        lo_s, up_s = slopes
    return relaxations.relax(act, pre.lo, pre.hi, lower_slope=lo_s, upper_slope=up_s, name=name)


class _Pool(NamedTuple):
    index: jax.Array       # [B, n_out] flat input index of the selected window entry
    dominant: jax.Array    # [B, n_out] bool
    top: jax.Array         # [B, n_out] the window's largest upper bound


def _pool_relax(layer: MaxPool, pre: Interval) -> _Pool:
    in_shape = pre.lo.shape[1:]
    flat, valid, _ = pool_windows(in_shape, layer.window, layer.strides, layer.padding)
    B = pre.lo.shape[0]
    lo = jnp.where(valid, pre.lo.reshape(B, -1)[:, flat], -jnp.inf)
    hi = jnp.where(valid, pre.hi.reshape(B, -1)[:, flat], -jnp.inf)
    j = jnp.argmax(lo, -1)
    lo_star = jnp.max(lo, -1)
    others = jnp.where(jax.nn.one_hot(j, lo.shape[-1], dtype=bool), -jnp.inf, hi)
    dominant = lo_star >= jnp.max(others, -1)
    index = jnp.asarray(flat)[jnp.arange(flat.shape[0])[None, :], j]
    return _Pool(index, dominant, jnp.max(hi, -1))


def _sum_tail(a):
    return jnp.sum(a, axis=tuple(range(2, a.ndim)))


def _offset_terms(L, off):
    off = jnp.asarray(off, L.dtype)
    return _sum_tail(L * off), _sum_tail(jnp.abs(L) * jnp.abs(off))


def _vjp_pull(layer, L, in_shapes, dtype):
    B, m = L.shape[:2]
    f = JAX[type(layer)]
    zeros = [jnp.zeros((B * m,) + tuple(s), dtype) for s in in_shapes]
    _, vjp = jax.vjp(lambda *xs: f(layer, *xs), *zeros)
    cts = vjp(L.reshape((B * m,) + L.shape[2:]))
    return [c.reshape((B, m) + tuple(s)) for c, s in zip(cts, in_shapes)]


def _affine_pull(layer, L, in_shapes, dtype):
    """Lambda `[B, m, *out]` through an affine layer: (per-input Lambdas, offset contribution `[B, m]`, its
    magnitude `[B, m]`). Direct transposes for dense, affine and structural layers; a VJP for convolutions."""
    B, m = L.shape[:2]
    zero = jnp.zeros((B, m), dtype)
    if isinstance(layer, Dense):
        W = jnp.asarray(layer.W, dtype)
        return [L @ W.T], *_offset_terms(L, layer.b)
    if isinstance(layer, Affine):
        return [L * jnp.asarray(layer.scale, dtype)], *_offset_terms(L, layer.shift)
    if isinstance(layer, (Reshape, Flatten)):
        return [L.reshape((B, m) + tuple(in_shapes[0]))], zero, zero
    if isinstance(layer, Transpose):
        inv = np.argsort(layer.perm)
        return [jnp.transpose(L, (0, 1) + tuple(int(a) + 2 for a in inv))], zero, zero
    if isinstance(layer, Add):
        return [L, L], zero, zero
    if isinstance(layer, Concatenate):
        sizes = np.cumsum([s[layer.axis] for s in in_shapes])[:-1]
        return list(jnp.split(L, sizes, axis=layer.axis + 2)), zero, zero
    if isinstance(layer, Conv):
        return _vjp_pull(layer, L, in_shapes, dtype), *_offset_terms(L, jnp.broadcast_to(
            jnp.asarray(layer.bias, dtype), L.shape[2:]))
    raise ValueError(f"bound propagation does not support layer {type(layer).__name__}")


def backward(graph: Graph, start: int, L, shapes, relax: dict, record: dict | None = None,
             errors: dict | None = None, extra: dict | None = None):
    """Pulls Lambda `[B, m, *shape(start)]` from node `start` back to the input.

    relax maps each nonlinear node id below start to its `Relaxation` (ReLU, Activation; its arrays per example
    `[B, *shape]` or per row `[B, m, *shape]`) or `_Pool`. extra: optional {node id: `[B, m, *shape]`} added to
    the Lambda of that node before it is pulled back (beta-CROWN's split multipliers). Returns
    (Lambda_in `[B, m, *input_shape]`, const `[B, m]`, mag `[B, m]`): for every input x' of the set on which the
    relaxations are valid, Lambda . value(start) >= Lambda_in . x' + const; mag bounds the summed magnitudes
    (for the rounding pad). record: optional dict; the Lambda reaching each ReLU node is stored under its id.
    errors: optional {node id: e_k} local rounding errors (`rounding.node_errors`): -|Lambda_k| . e_k is added,
    so the bound holds for the network evaluated in that dtype."""
    B, m = L.shape[:2]
    dtype = L.dtype
    acc = {start: L}
    const = jnp.zeros((B, m), dtype)
    mag = jnp.zeros((B, m), dtype)
    for k in range(start, 0, -1):
        Lk = acc.pop(k, None)
        if extra and k in extra:
            Lk = extra[k] if Lk is None else Lk + extra[k]
        if Lk is None:
            continue
        node = graph.nodes[k - 1]
        layer = node.layer
        if errors and k in errors:
            axes = tuple(range(2, Lk.ndim))
            rerr = jnp.sum(jnp.abs(Lk) * errors[k][:, None], axes)
            const, mag = const - rerr, mag + rerr
        if isinstance(layer, AFFINE_KINDS):
            cts, c, g = _affine_pull(layer, Lk, [shapes[i] for i in node.inputs], dtype)
            const, mag = const + c, mag + g
            for i, ct in zip(node.inputs, cts):
                acc[i] = acc[i] + ct if i in acc else ct
            continue
        z = node.inputs[0]
        if record is not None and isinstance(layer, ReLU):
            record[k] = Lk
        if isinstance(layer, MaxPool):
            pool: _Pool = relax[k]
            Lf = Lk.reshape(B, m, -1)
            Lp, Ln = jnp.maximum(Lf, 0), jnp.minimum(Lf, 0)
            coef = Lp + jnp.where(pool.dominant[:, None], Ln, 0.0)
            top = jnp.where(pool.dominant, 0.0, pool.top)[:, None]
            const = const + jnp.sum(jnp.where(pool.dominant[:, None], 0.0, Ln * top), -1)
            mag = mag + jnp.sum(jnp.abs(Ln * top), -1)
            d_in = int(np.prod(shapes[z]))
            Lz = jax.vmap(lambda c, i: jnp.zeros((m, d_in), dtype).at[:, i].add(c))(coef, pool.index)
            Lz = Lz.reshape((B, m) + tuple(shapes[z]))
        else:
            ls, lb, us, ub = (v if v.ndim == Lk.ndim else v[:, None] for v in relax[k])
            Lp, Ln = jnp.maximum(Lk, 0), jnp.minimum(Lk, 0)
            Lz = Lp * ls + Ln * us
            terms = Lp * lb + Ln * ub
            axes = tuple(range(2, Lk.ndim))
            const = const + jnp.sum(terms, axes)
            mag = mag + jnp.sum(jnp.abs(terms), axes)
        acc[z] = acc[z] + Lz if z in acc else Lz
    if 0 not in acc:
        acc[0] = jnp.zeros((B, m) + tuple(shapes[0]), dtype)
    return acc[0], const, mag


def n_ops(shapes) -> int:
    """The number of units of all nodes: an upper bound on the length of any sum in a pass (rounding pads)."""
    return int(sum(np.prod(s) for s in shapes))


def concretize(s: InputSet, Lin, const, mag, count: int):
    """min over each example's set of Lambda_in x + const, minus the rounding pad: `[B, m]`."""
    B, m = Lin.shape[:2]
    A = Lin.reshape(B, m, -1)
    low = jax.vmap(lambda c, e, l, h, a, k: input_sets.linear_lower(input_sets.BallInBox(c, e, l, h, s.p), a, k))(
        s.center, s.eps, s.lo, s.hi, A, const)
    xmax = jnp.maximum(jnp.abs(s.lo), jnp.abs(s.hi))
    total = mag + jnp.einsum("bmd,bd->bm", jnp.abs(A), xmax) + jnp.abs(const)
    u = jnp.finfo(A.dtype).eps
    return low - 2 * (count + 2) * u * (total + 1.0)


def node_shapes(graph: Graph, example_shape) -> list:
    """The example shape of every node (index 0 = the input)."""
    vals = jax.eval_shape(lambda x: interpret(graph, JAX, x), jax.ShapeDtypeStruct((1,) + tuple(example_shape),
                                                                                        jnp.float32))
    return [tuple(v.shape[1:]) for v in vals]


def _needs_bounds(graph: Graph) -> set:
    """The nodes whose bounds a relaxation needs (the inputs of nonlinear nodes), less those that are nonlinear
    themselves (a ReLU feeding a max-pool): their bounds come by interval arithmetic from their input's (sound;
    exact per coordinate for ReLU, monotone activations and max-pool), and a backward pass from such a node
    would need its own relaxation, which is built from those very bounds."""
    return {n.inputs[0] for n in graph.nodes if isinstance(n.layer, NONLINEAR)} - \
        {k for k, n in enumerate(graph.nodes, 1) if isinstance(n.layer, NONLINEAR)}


def _unit_rows(node, k: int, shapes, unit, err, dtype):
    """The rows +e_u, -e_u of node k's units `unit` `[R, r]` (r per example) as a backward pass starts them:
    (start node, Lambda `[R, 2r, *shape(start)]`, offset `[R, 2r]`, its magnitude). Below a dense layer the
    one-hot rows become W's columns, pulled from the layer's input (a gather, no product); err: the layer's
    local rounding errors `[R, n]` or None."""
    if isinstance(node.layer, Dense) and len(shapes[k]) == 1:
        start = node.inputs[0]
        G = jnp.asarray(node.layer.W, dtype).T[unit]
        off = jnp.broadcast_to(jnp.asarray(node.layer.b, dtype), shapes[k])[unit]
        c0, g0 = jnp.concatenate([off, -off], 1), jnp.concatenate([jnp.abs(off)] * 2, 1)
        if err is not None:
            e = jnp.tile(jnp.take_along_axis(err.reshape(err.shape[0], -1), unit, 1), (1, 2))
            c0, g0 = c0 - e, g0 + e
        return start, jnp.concatenate([G, -G], 1).reshape(G.shape[:1] + (-1,) + tuple(shapes[start])), c0, g0
    E = jax.nn.one_hot(unit, int(np.prod(shapes[k])), dtype=dtype).reshape(unit.shape + tuple(shapes[k]))
    return k, jnp.concatenate([E, -E], 1), 0.0, 0.0


def intermediate_bounds(graph: Graph, s: InputSet, shapes, *, method: str = "crown", chunk: int = 1024,
                        slopes: dict | None = None, arith=None, alpha_steps: int = 0, alpha_lr: float = 0.1,
                        given: list | None = None, splits: dict | None = None, active: dict | None = None):
    """(bounds of every node `[Interval]`, relaxations of every nonlinear node, local rounding errors) over the
    input set.

    method 'ibp': interval bounds only; 'crown': the pre-activation nodes' bounds by backward passes with
    Lambda = I (in chunks of `chunk` rows), intersected with IBP. alpha_steps > 0: every row's own lower slopes
    of the ReLUs below it are optimized by that many projected Adam steps (alpha-CROWN's optimized intermediate
    bounds; the best iterate per row is kept, so never looser than CROWN). arith: the dtype of the arithmetic the
    bounds hold for (the network evaluated in it; None: exact arithmetic). given: known bounds of every node
    `[Interval]` (e.g. tightened by MILP), intersected with each node's as it is computed, so that every later
    node's bounds and relaxations use them. splits: ReLU splits as in `refine` (node id -> `[B, *shape]` in
    {-1, 0, 1}), the split units' intervals clamped as they are computed: bounds over the subdomain, every later
    node re-bounded with the splits known (an empty interval marks an infeasible subdomain). active: node id ->
    bool `[B, *shape]` (may be traced), the units of each example to re-bound by backward passes (e.g. those
    unstable under `given`: the others' relaxation is exact); they are packed across the batch into passes of
    `chunk` rows, as many as the count needs; the other units keep IBP's bounds intersected with `given`. Not
    with alpha_steps > 0."""
    lo, hi = s.interval()
    B = lo.shape[0]
    dtype = lo.dtype
    bounds = [Interval(lo.reshape((B,) + tuple(shapes[0])), hi.reshape((B,) + tuple(shapes[0])))]
    relax = {}
    errors = {}
    need = _needs_bounds(graph) if method != "ibp" else set()
    count = n_ops(shapes)
    for k, node in enumerate(graph.nodes, 1):
        handler = ibp.IBP.get(type(node.layer))
        if handler is None:
            raise ValueError(f"bound propagation does not support layer {type(node.layer).__name__}")
        b = handler(node.layer, *[bounds[i] for i in node.inputs])
        if arith is not None:
            e = rounding.local_error(node.layer, [bounds[i] for i in node.inputs], arith)
            if e is not None:
                errors[k] = e
                b = Interval(b.lo - e, b.hi + e)
        if active is not None and k in active and k in need:
            if _optimizes(alpha_steps):
                raise ValueError("intermediate_bounds: alpha_steps must be 0 where active is given, "
                                 f"got {alpha_steps!r}")
            clo, chi = _packed_rows_bounds(graph, s, shapes, k, active[k], relax, errors, chunk, count)
            b = Interval(jnp.maximum(b.lo, clo.reshape(b.lo.shape)), jnp.minimum(b.hi, chi.reshape(b.hi.shape)))
        elif k in need and k > 0:
            n = int(np.prod(shapes[k]))
            step = min(n, max(1, chunk // max(B, 1)))
            n_chunks = -(-n // step)
            chunks = np.arange(n_chunks * step).reshape(n_chunks, step) % n     # the last chunk wraps around

            def rows_bounds(idx, k=k, node=node):
                start, C, c0, g0 = _unit_rows(node, k, shapes, jnp.broadcast_to(jnp.asarray(idx), (B, step)),
                                              errors.get(k), dtype)

                def lower(params):
                    Lin, c, g = backward(graph, start, C, shapes, row_relax(graph, relax, bounds, params),
                                         errors=errors)
                    return concretize(s, Lin, c + c0, g + g0, count)
                low = lower({})
                if _optimizes(alpha_steps):
                    init = row_slopes(graph, relax, bounds, k, 2 * step)
                    if init:
                        low = ascend(lower, init, project_slopes, alpha_steps, alpha_lr, low)
                return low[:, :step], -low[:, step:]
            # one compiled chunk in a loop (lax.map), so that memory holds one chunk's backward pass, not all
            clo, chi = jax.lax.map(rows_bounds, jnp.asarray(chunks))                 # [n_chunks, B, step]
            clo, chi = (jnp.moveaxis(v, 0, 1).reshape(B, -1)[:, :n] for v in (clo, chi))
            b = Interval(jnp.maximum(b.lo, clo.reshape(b.lo.shape)), jnp.minimum(b.hi, chi.reshape(b.hi.shape)))
        if given is not None:
            b = Interval(jnp.maximum(b.lo, given[k].lo), jnp.minimum(b.hi, given[k].hi))
        if splits is not None and k in splits:
            b = _clamp(b, splits[k])
        bounds.append(b)
        if isinstance(node.layer, MaxPool):
            relax[k] = _pool_relax(node.layer, bounds[node.inputs[0]])
        elif isinstance(node.layer, (ReLU, Activation)):
            relax[k] = _relax(node.layer, bounds[node.inputs[0]], None if slopes is None else slopes.get(k))
    return bounds, relax, errors


def _packed_rows_bounds(graph: Graph, s: InputSet, shapes, k: int, mask, relax: dict, errors: dict, step: int,
                        count: int):
    """CROWN bounds `[B, n]` of node k's units where mask `[B, *shape]` is set (elsewhere -inf, inf). The set
    (example, unit) pairs are packed in chunks of `step` rows; each row is its own example of the backward
    pass, with its example's relaxations gathered."""
    B = mask.shape[0]
    n = int(np.prod(shapes[k]))
    size = -(-(B * n) // step) * step
    flat = jnp.flatnonzero(mask.reshape(-1), size=size, fill_value=B * n)
    n_chunks = (jnp.sum(mask) + step - 1) // step
    node = graph.nodes[k - 1]
    dtype = s.center.dtype

    def chunk(i, acc):
        idx = jax.lax.dynamic_slice(flat, (i * step,), (step,))
        sub, unit = idx // n, idx % n                     # padding: sub = B, dropped below
        take = jnp.minimum(sub, B - 1)
        rel = jax.tree.map(lambda v: v[take], relax)
        err = {j: v[take] for j, v in errors.items()}
        rs = InputSet(*(jnp.asarray(v)[take] for v in (s.center, s.eps, s.lo, s.hi)), s.p)
        start, C, c0, g0 = _unit_rows(node, k, shapes, unit[:, None], err.get(k), dtype)
        Lin, c, g = backward(graph, start, C, shapes, rel, errors=err)
        low = concretize(rs, Lin, c + c0, g + g0, count)
        lo, hi = acc
        return lo.at[sub, unit].max(low[:, 0], mode="drop"), hi.at[sub, unit].min(-low[:, 1], mode="drop")
    init = (jnp.full((B, n), -jnp.inf, dtype), jnp.full((B, n), jnp.inf, dtype))
    return jax.lax.fori_loop(0, n_chunks, chunk, init)


def _slope_range(layer, pre: Interval):
    lo, hi = _act_bounds(layer).slope_range(pre.lo, pre.hi)
    return lo, jnp.maximum(hi - lo, 0.0)


def row_slopes(graph: Graph, relax: dict, bounds, below: int, m: int) -> dict:
    """CROWN's slopes of every ReLU / activation node below node `below`, repeated for each of m rows, as the
    parameters `row_relax` reads: `[B, m, *shape]` in [0, 1]; a 1-tuple (the lower slope) for ReLU, (lower,
    upper) for smooth activations as fractions of the range of sigma' over the pre-activation interval (so one
    step size fits every layer)."""
    init = {}
    for k, node in enumerate(graph.nodes[:below - 1], 1):
        if k not in relax or not isinstance(node.layer, (ReLU, Activation)):
            continue
        r = relax[k]
        shape = (r.lower_slope.shape[0], m) + r.lower_slope.shape[1:]
        rows = lambda v: jnp.broadcast_to(v[:, None], shape)  # noqa: E731
        if isinstance(node.layer, ReLU):
            init[k] = (rows(r.lower_slope),)
        else:
            lo, width = _slope_range(node.layer, bounds[node.inputs[0]])
            frac = lambda v: jnp.clip((v - lo) / jnp.where(width > 0, width, 1.0), 0.0, 1.0)  # noqa: E731
            init[k] = (rows(frac(r.lower_slope)), rows(frac(r.upper_slope)))
    return init


def project_slopes(params: dict) -> dict:
    return jax.tree.map(lambda v: jnp.clip(v, 0.0, 1.0), params)


def row_relax(graph: Graph, relax: dict, bounds, params: dict) -> dict:
    """relax with per-row slopes (`row_slopes`' parameters): ReLU lower slopes replaced where the unit is unstable
    (relu(z) >= a z for every z and a in [0, 1], so any such slope is sound), smooth activations' lines rebuilt
    for the given slopes with intercepts valid on the whole pre-activation interval."""
    out = dict(relax)
    for k, q in params.items():
        node, r = graph.nodes[k - 1], relax[k]
        if isinstance(node.layer, ReLU):
            unstable = ((r.upper_slope > 0) & (r.upper_slope < 1))[:, None]
            out[k] = r._replace(lower_slope=jnp.where(unstable, q[0], r.lower_slope[:, None]))
        else:
            pre = bounds[node.inputs[0]]
            lo, width = _slope_range(node.layer, pre)
            slopes = tuple(lo[:, None] + v * width[:, None] for v in q)
            out[k] = _relax(node.layer, Interval(jnp.broadcast_to(pre.lo[:, None], q[0].shape),
                                                 jnp.broadcast_to(pre.hi[:, None], q[0].shape)), slopes)
    return out


def _optimizes(steps) -> bool:
    """steps may be a traced count (one compiled program for every count): then it is assumed positive."""
    return not isinstance(steps, (int, np.integer)) or steps > 0


def ascend(lower, params, project, steps: int, lr: float, best, *, final: bool = False):
    """Projected Adam ascent of sum(lower(params)) (finite entries) from params; returns the elementwise max of
    best and every iterate's lower(params): each iterate's bound is valid, so the result is too. final: also
    return the last params."""
    opt = optax.adam(lr)

    def loss(q):
        v = lower(q)
        return -jnp.sum(jnp.where(jnp.isfinite(v), v, 0.0)), v

    def body(_, carry):
        q, state, top = carry
        (_, v), g = jax.value_and_grad(loss, has_aux=True)(q)
        g = jax.tree.map(lambda a: jnp.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), g)
        upd, state = opt.update(g, state, q)
        return project(optax.apply_updates(q, upd)), state, jnp.maximum(top, v)

    q, _, best = jax.lax.fori_loop(0, steps, body, (params, opt.init(params), best))
    best = jnp.maximum(best, lower(q))
    return (best, q) if final else best


def relaxations_for(graph: Graph, bounds, slopes: dict | None = None) -> dict:
    """The relaxation of every nonlinear node from the bounds of its input."""
    relax = {}
    for k, node in enumerate(graph.nodes, 1):
        if isinstance(node.layer, MaxPool):
            relax[k] = _pool_relax(node.layer, bounds[node.inputs[0]])
        elif isinstance(node.layer, (ReLU, Activation)):
            relax[k] = _relax(node.layer, bounds[node.inputs[0]], None if slopes is None else slopes.get(k))
    return relax


def _clamp(b: Interval, sp) -> Interval:
    return Interval(jnp.where(sp > 0, jnp.maximum(b.lo, 0.0), b.lo), jnp.where(sp < 0, jnp.minimum(b.hi, 0.0), b.hi))


def refine(graph: Graph, bounds, splits: dict):
    """Bounds on a subdomain of ReLU splits: splits maps a ReLU input node id to `[B, *shape]` in {-1, 0, 1}
    (1: the unit is active, z >= 0; -1: inactive, z <= 0). The split units' intervals are clamped and IBP
    from them tightens every later node (intersected with the given bounds). A unit whose clamped interval
    is empty makes its subdomain infeasible: returned as `[B]` bool."""
    out = [bounds[0]]
    infeasible = jnp.zeros(bounds[0].lo.shape[:1], bool)
    for k, node in enumerate(graph.nodes, 1):
        b = ibp.IBP[type(node.layer)](node.layer, *[out[i] for i in node.inputs])
        b = Interval(jnp.maximum(b.lo, bounds[k].lo), jnp.minimum(b.hi, bounds[k].hi))
        if k in splits:
            b = _clamp(b, splits[k])
            infeasible |= jnp.any((b.lo > b.hi).reshape(b.lo.shape[0], -1), -1)
        out.append(b)
    return out, infeasible


def spec_lower(graph: Graph, s: InputSet, C, shapes, bounds, relax, errors=None):
    """Lower bounds of C f(x') over the set, `[B, m]`, for C `[B, m, K]`, given intermediate bounds."""
    Lin, c, g = backward(graph, len(graph.nodes), C.astype(s.center.dtype), shapes, relax, errors=errors)
    low = concretize(s, Lin, c, g, n_ops(shapes))
    out = bounds[-1]
    ibp_low = (jnp.einsum("bmk,bk->bm", jnp.maximum(C, 0), out.lo) + jnp.einsum("bmk,bk->bm", jnp.minimum(C, 0), out.hi))
    return jnp.maximum(low, ibp_low)


def ibp_spec_lower(bounds, C):
    out = bounds[-1]
    return jnp.einsum("bmk,bk->bm", jnp.maximum(C, 0), out.lo) + jnp.einsum("bmk,bk->bm", jnp.minimum(C, 0), out.hi)


def alpha_spec_lower(graph: Graph, s: InputSet, C, shapes, bounds, relax, *, steps: int = 20, lr: float = 0.1,
                     errors=None):
    """alpha-CROWN: every row's own slopes of every activation (`row_slopes`) optimized by projected Adam to raise
    the spec's lower bounds (intermediate bounds fixed). Every iterate is a valid bound; the best per row is
    returned, starting from CROWN's, so never looser than CROWN."""
    best = spec_lower(graph, s, C, shapes, bounds, relax, errors)
    init = row_slopes(graph, relax, bounds, len(graph.nodes) + 1, C.shape[1])
    if not init or not _optimizes(steps):
        return best

    def lower(params):
        return spec_lower(graph, s, C, shapes, bounds, row_relax(graph, relax, bounds, params), errors)
    return ascend(lower, init, project_slopes, steps, lr, best)
