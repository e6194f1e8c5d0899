"""Regularization terms, composable (optax style).

A term is a function `term(params, x, y, *, apply_fn, key) -> scalar`, where `apply_fn(params, x)` gives
`[batch, K]` logits (the model with its constants bound; `logits_fn` elsewhere in robustjax means the
one-argument x -> logits). Terms that need only the weights ignore the batch; terms that need the model and
the batch (cross-Lipschitz) use both. `combine` sums weighted terms; `from_spec` builds terms by registered
name for configs. Dropout is a model field, not a term here.

The registry is complete whatever was imported first: a name not found is looked up again after importing
the modules in `PROVIDERS` (adversarial training, CEDA/ACET), which register their terms on import.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.geometry import check_norm, dual, take_max


class Term(Protocol):
    def __call__(self, params, x, y, *, apply_fn: Callable, key) -> jax.Array: ...


def weight_decay(weight: float, *, include_biases: bool = False) -> Term:
    """weight * 1/2 sum ||W||^2 over weight matrices and kernels (leaves with ndim >= 2 unless
    include_biases), as `lambda * tf.nn.l2_loss(W)` in the cross-Lipschitz code."""
    def term(params, x, y, *, apply_fn, key):
        del x, y, apply_fn, key
        leaves = [p for p in jax.tree.leaves(params) if include_biases or p.ndim >= 2]
        return weight * 0.5 * sum(jnp.sum(p * p) for p in leaves)
    return term


def combine(*terms: Term) -> Term:
    """The sum of terms (each already weighted); keys are split between them."""
    def term(params, x, y, *, apply_fn, key):
        if not terms:
            return jnp.zeros((), jnp.float32)
        keys = jax.random.split(key, len(terms))
        return sum(t(params, x, y, apply_fn=apply_fn, key=k) for t, k in zip(terms, keys))
    return term


# ----------------------------------------------------------------------------- cross-Lipschitz
#
# Omega(f) = 1/(n K^2) sum_i sum_{l,m} ||grad f_l(x_i) - grad f_m(x_i)||_2^2   (Hein & Andriushchenko,
# NIPS 2017; methods.md 1(c)). Never the K^2 pairs: with the K input gradients g_l of one example,
#   sum_{l,m} ||g_l - g_m||^2 = 2K sum_l ||g_l||^2 - 2 ||sum_l g_l||^2 = 2K ||P J||_F^2,
# J = [g_1; ...; g_K] `[K, d]`, P = I - 11^T/K (the centering projection).


def _pairwise_from_jacobian(J) -> jax.Array:
    """sum_{l,m} ||g_l - g_m||^2 summed over examples; J `[K, n, ...]` (jacrev layout)."""
    K = J.shape[0]
    J = J.reshape(K, J.shape[1], -1)
    sq = jnp.sum(J * J)
    tot = jnp.sum(J, 0)
    return 2 * K * sq - 2 * jnp.sum(tot * tot)


def cross_lipschitz_jacrev(params, x, apply_fn) -> jax.Array:
    """Exact Omega for any smooth apply_fn(params, x `[n, ...]`) -> `[n, K]`: the K input gradients
    by `jax.jacrev` of the batch-summed logits (examples must not interact), then the O(K) identity."""
    def summed(xx):
        return jnp.sum(apply_fn(params, xx), 0)
    J = jax.jacrev(summed)(x)                                     # [K, n, ...]
    n, K = x.shape[0], J.shape[0]
    return _pairwise_from_jacobian(J) / (n * K * K)


def _gram_blocks(m: int, blocks: int | None = None) -> int:
    """Column blocks `gram` uses for m columns: None -> 8 on the CPU, 1 elsewhere (measured,
    benchmarks/cross_lipschitz_step.md: on an H100 the blocked form is slower than one product, 3.0 vs 2.35x a
    plain step at batch 1024); 1 when m is not divisible by them or below 64 per block."""
    if blocks is None:
        blocks = 8 if jax.default_backend() == "cpu" else 1
    return 1 if m % blocks or m < 64 * blocks else blocks


def gram(U, *, blocks: int | None = None) -> jax.Array:
    """U^T U `[m, m]` for U `[d, m]`, computing only the blocks on and above the diagonal (m^2 d (b + 1) / (2 b)
    multiply-adds instead of m^2 d, for b column blocks, see `_gram_blocks`)."""
    m = U.shape[1]
    blocks = _gram_blocks(m, blocks)
    if blocks == 1:
        return U.T @ U
    bs = m // blocks
    rows = [U[:, i * bs:(i + 1) * bs].T @ U[:, i * bs:] for i in range(blocks)]      # [bs, m - i bs]
    return jnp.block([[rows[j][:, (i - j) * bs:(i - j + 1) * bs].T for j in range(i)] + [rows[i]]
                      for i in range(blocks)])


@jax.custom_vjp
def _one_hidden_layer_sum(U, W, D):
    """sum[(W B W^T) o (D^T D) o (U^T U)], B = K I - 1 1^T, for U `[d, m]`, W `[m, K]`, D `[n, m]`, with a
    hand-written VJP: one m^2 d product for U (2 U Q), one n m^2 product for D (2 D H) and m^2 K for W,
    where autodiff would repeat the symmetric products and broadcast every m x m factor."""
    return _one_hidden_layer_fwd(U, W, D)[0]


def _one_hidden_layer_fwd(U, W, D):
    K = W.shape[1]
    s = jnp.sum(W, 1)
    A = K * (W @ W.T) - jnp.outer(s, s)
    S, G = D.T @ D, gram(U)
    return jnp.sum(A * S * G), (U, W, D, A, S, G)


def _one_hidden_layer_bwd(res, g):
    U, W, D, A, S, G = res
    K = W.shape[1]
    MW = (S * G) @ W
    gW = (2 * g) * (K * MW - jnp.sum(MW, 1, keepdims=True))
    return (2 * g) * (U @ (A * S)), gW, (2 * g) * (D @ (A * G))


_one_hidden_layer_sum.defvjp(_one_hidden_layer_fwd, _one_hidden_layer_bwd)


def cross_lipschitz_one_hidden_layer(U, W, x, act) -> jax.Array:
    """Closed form for f(x) = W^T sigma(U^T x) (methods.md 1(c), the authors' `cross_lipschitz_analytical_1hl`):
    Omega n K^2 = 2 sum[(K W W^T - s s^T) o (D^T D) o (U^T U)], s = W 1, D_ia = sigma'(<u_a, x_i>).
    U `[d, m]`, W `[m, K]`, x `[n, ...]`; cost about m^2 (d (b + 1) / (2 b) + d + 2 n + 2 K) multiply-adds
    with its gradient (`gram` with b blocks)."""
    x = x.reshape(x.shape[0], -1)
    n, K = x.shape[0], W.shape[1]
    D = act.grad(x @ U)                                           # [n, m]
    return 2 * _one_hidden_layer_sum(U, W, D) / (n * K * K)


def kernel_gram(x, centers, gamma) -> jax.Array:
    """G_rs = 4 gamma^2 sum_i <x_i - c_r, x_i - c_s> k_ir k_is `[R, R]` (x `[n, d]`, centers `[R, d]`)."""
    from robustjax.models.kernel import gaussian_kernel
    x = x.reshape(x.shape[0], -1)
    k = gaussian_kernel(x, centers, gamma)                        # [n, R]
    xc = x @ centers.T                                            # [n, R]
    xx = jnp.sum(x * x, -1)
    kxc = k * xc
    cross = kxc.T @ k
    G = (k * xx[:, None]).T @ k - cross - cross.T + (centers @ centers.T) * (k.T @ k)
    return 4 * gamma ** 2 * G


def cross_lipschitz_kernel(alpha, x, centers, gamma) -> jax.Array:
    """Quadratic form for the Gaussian kernel machine f_l(x) = sum_r alpha_rl exp(-gamma ||x - c_r||^2)
    (methods.md 1(c) [D]): Omega = 2/(n K^2) [K tr(alpha^T G alpha) - (alpha 1)^T G (alpha 1)],
    G = `kernel_gram(x, centers, gamma)`. alpha `[R, K]`."""
    n, K = x.shape[0], alpha.shape[1]
    G = kernel_gram(x, centers, gamma)
    a1 = jnp.sum(alpha, 1)
    return 2 * (K * jnp.sum(alpha * (G @ alpha)) - a1 @ (G @ a1)) / (n * K * K)


def cross_lipschitz_stochastic(params, x, apply_fn, key, *, num_samples: int = 1) -> jax.Array:
    """Unbiased estimate of Omega from `num_samples` vector-Jacobian products per example:
    xi Rademacher in R^K, centered (P xi); E[(P xi)(P xi)^T] = P, so E ||J^T P xi||^2 = ||P J||_F^2 and
    Omega = 2/(n K) sum_i ||P J_i||_F^2 is estimated by 2/(n K) sum_i mean_s ||J_i^T P xi_is||^2.
    One forward pass shared by all samples."""
    out, pullback = jax.vjp(lambda xx: apply_fn(params, xx), x)
    n, K = out.shape
    xi = jax.random.rademacher(key, (num_samples, n, K), out.dtype)
    xi = xi - jnp.mean(xi, -1, keepdims=True)
    g = jax.vmap(lambda v: pullback(v)[0])(xi)                    # [S, n, ...]
    return 2 * jnp.sum(g * g) / (num_samples * n * K)


def _closed_form_cheaper(structure: str, n: int, d: int, m: int, K: int) -> bool:
    """Multiply-adds with the gradient: the closed form's m^2 (d (b + 1) / (2 b) + d + 2 n + 2 K) (`gram` with b
    blocks) vs K vector-Jacobian products (each ~ the forward pass, and about three times that with the outer
    gradient)."""
    if structure == "gaussian_kernel":
        return True
    b = _gram_blocks(m)
    gram_d = d * (b + 1) / (2 * b)
    return m * m * (gram_d + d + 2 * n + 2 * K) < 3 * n * K * d * m


def cross_lipschitz(weight: float, *, method: str = "auto", structure: str | None = None,
                    act: str = "softplus", alpha: float = 10.0, centers=None, gamma: float | None = None,
                    num_samples: int = 1) -> Term:
    """weight * Omega(f), the cross-Lipschitz regulariser (Hein & Andriushchenko, NIPS 2017, eq. in
    methods.md 1(c)), as a term `term(params, x, y, *, apply_fn, key)`.

    method: "jacrev" (any smooth apply_fn), "closed_form" (needs `structure`), "stochastic" (unbiased,
      `num_samples` vjps per example; uses `key`), or "auto": the exact one with fewer multiply-adds for
      the batch's shape (closed form when a structure is given and it is cheaper, else jacrev).
    structure: None, "one_hidden_layer" (params {"U", "W"}; `act`, `alpha` name its activation) or
      "gaussian_kernel" (params {"alpha"}; `centers` `[R, d]` and `gamma` are constants, closed over).
    """
    methods = ("auto", "jacrev", "closed_form", "stochastic")
    if method not in methods:
        raise ValueError(f"unknown cross_lipschitz method {method!r}; known: {methods}")
    if structure not in (None, "one_hidden_layer", "gaussian_kernel"):
        raise ValueError(f"unknown structure {structure!r}; known: None, 'one_hidden_layer', 'gaussian_kernel'")
    if method == "closed_form" and structure is None:
        raise ValueError("method='closed_form' needs structure='one_hidden_layer' or 'gaussian_kernel'")
    if structure == "gaussian_kernel" and (centers is None or gamma is None):
        raise ValueError("structure='gaussian_kernel' needs the constant `centers` [R, d] and `gamma`")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    activation = None
    if structure == "one_hidden_layer":
        from robustjax.models import activations
        activation = activations.get(act, alpha=alpha)
        if not activation.smooth:
            raise ValueError(f"cross-Lipschitz needs a differentiable activation; {activation.name} is not")
    C = None if centers is None else jnp.asarray(centers).reshape(jnp.shape(centers)[0], -1)

    def closed(params, x):
        if structure == "one_hidden_layer":
            return cross_lipschitz_one_hidden_layer(params["U"], params["W"], x, activation)
        return cross_lipschitz_kernel(params["alpha"], x, C, gamma)

    def term(params, x, y, *, apply_fn, key):
        del y
        if method == "stochastic":
            return weight * cross_lipschitz_stochastic(params, x, apply_fn, key, num_samples=num_samples)
        use_closed = method == "closed_form"
        if method == "auto" and structure is not None:
            n, d = x.shape[0], int(np.prod(x.shape[1:]))
            if structure == "one_hidden_layer":
                m, K = params["W"].shape
            else:
                m, K = params["alpha"].shape
            use_closed = _closed_form_cheaper(structure, n, d, m, K)
        if use_closed:
            return weight * closed(params, x)
        return weight * cross_lipschitz_jacrev(params, x, apply_fn)
    return term


REGULARIZERS: dict[str, Callable[..., Term]] = {"weight_decay": weight_decay, "cross_lipschitz": cross_lipschitz}
PROVIDERS = ("robustjax.attacks.adversarial_training", "robustjax.ood")


def register(name: str, factory: Callable[..., Term]) -> None:
    """Makes `factory(weight, **kwargs) -> Term` available to `from_spec` as `name`. A module registering
    terms on import belongs in `PROVIDERS`."""
    if not isinstance(name, str) or not callable(factory):
        raise ValueError(f"register needs a name (str) and a callable factory, got {name!r}, {factory!r}")
    REGULARIZERS[name] = factory


def get(name: str) -> Callable[..., Term]:
    """The factory registered as `name`, importing `PROVIDERS` once on a miss; ValueError listing the known
    names if it is still missing."""
    if name not in REGULARIZERS:
        import importlib
        for module in PROVIDERS:
            importlib.import_module(module)
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; known: {sorted(REGULARIZERS)}")
    return REGULARIZERS[name]


def from_spec(spec: Sequence[tuple[str, float] | tuple[str, float, dict]]) -> Term:
    """Terms from `[(name, weight), (name, weight, {kwargs}), ...]` (weights finite and >= 0; a zero weight
    drops its term); an empty spec is zero."""
    terms = []
    for i, item in enumerate(spec):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3) or not isinstance(item[0], str) \
                or (len(item) == 3 and not isinstance(item[2], dict)):
            raise ValueError(f"regularizers[{i}] must be (name, weight) or (name, weight, {{kwargs}}), got {item!r}")
        name, weight, kw = (tuple(item) + ({},))[:3]
        factory = get(name)
        weight = validate.positive_float(weight, f"weight of regularizer {name!r}", allow_zero=True)
        if weight:
            terms.append(factory(weight, **kw))
    return combine(*terms)


# ----------------------------------------------------------------------------- MMR
#
# Maximum margin regularizer (Croce, Andriushchenko, Hein, AISTATS 2019; methods.md 5). On the linear region
# of x a ReLU net is affine, so the l_p distance from x to the hyperplane {z_i = 0} of a hidden unit is
# |z_i(x)| / ||grad_x z_i(x)||_q and to the decision hyperplane of class j it is
# (f_y(x) - f_j(x)) / ||grad_x (f_y - f_j)(x)||_q, q dual to p. The pre-activations z_i come from any
# `apply_fn` by reading its jaxpr (`preactivations`), so MLPs and CNNs need no model-specific code.

_RELU_CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
               "custom_vjp_call_jaxpr", "remat", "checkpoint")


def _zero_literal(v) -> bool:
    from jax.extend import core as jcore
    return isinstance(v, jcore.Literal) and np.ndim(v.val) == 0 and float(v.val) == 0.0


def _eval_capturing(jaxpr, consts, args, dependent, found: list):
    """Evaluates `jaxpr` on args (JAX values: tracers welcome), appending the input of every ReLU whose input
    depends on the network input (`dependent[i]` for args) to `found`; ReLU = `max(a, 0)` with a literal 0 or
    a call named "relu" (jax.nn.relu). Other calls (jit, custom_jvp, remat) are evaluated equation by
    equation, so ReLUs inside them are found too. Returns (outputs, their dependence flags)."""
    from jax.extend import core as jcore

    from robustjax.network.trace import sub_jaxpr
    env, dep = {}, {}

    def read(v):
        return (v.val, False) if isinstance(v, jcore.Literal) else (env[v], dep[v])

    for v, c in zip(jaxpr.constvars, consts):
        env[v], dep[v] = c, False
    for v, a, d in zip(jaxpr.invars, args, dependent):
        env[v], dep[v] = a, d
    for eqn in jaxpr.eqns:
        vals, deps = zip(*[read(v) for v in eqn.invars]) if eqn.invars else ((), ())
        name = eqn.primitive.name
        is_relu_call = name in _RELU_CALLS and str(eqn.params.get("name", "")) == "relu" and len(vals) == 1
        is_relu_max = name == "max" and len(vals) == 2 and (
            (deps[0] and _zero_literal(eqn.invars[1])) or (deps[1] and _zero_literal(eqn.invars[0])))
        if (is_relu_call and deps[0]) or is_relu_max:
            a = vals[0] if (is_relu_call or deps[0]) else vals[1]
            found.append(a)
            outs, out_deps = [jnp.maximum(a, 0)], [True]
        elif name in _RELU_CALLS and sub_jaxpr(eqn) is not None:
            sub, sub_consts = sub_jaxpr(eqn)
            outs, out_deps = _eval_capturing(sub, sub_consts, vals, deps, found)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)
            if isinstance(bound, tuple):                     # older jax: (subfuns, params)
                out = eqn.primitive.bind(*bound[0], *vals, **bound[1])
            else:
                out = eqn.primitive.bind(*vals, **bound)
            outs = out if eqn.primitive.multiple_results else [out]
            out_deps = [any(deps)] * len(outs)
        for v, o, d in zip(eqn.outvars, outs, out_deps):
            if not isinstance(v, jcore.DropVar):
                env[v], dep[v] = o, d
    outs = [read(v) for v in jaxpr.outvars]
    return [o for o, _ in outs], [d for _, d in outs]


def preactivations(apply_fn: Callable, params, x) -> tuple[jax.Array, list]:
    """(logits `[batch, K]`, [z_1 `[batch, ...]`, ..., z_L]): the logits of `apply_fn(params, x)` and the input
    of every ReLU in evaluation order (z_l has the shape of that layer's pre-activation, batch first).

    Generic: `apply_fn` is read as a jaxpr (params and x as its arguments, so gradients flow to both) and
    re-evaluated equation by equation; a ReLU is `jax.nn.relu` or `max(a, 0)` applied to a value that depends
    on x. Works under jit, vmap, grad. A max-pool's switches are not pre-activations and are not returned.
    """
    leaves, treedef = jax.tree.flatten(params)
    closed = jax.make_jaxpr(lambda lv, xx: apply_fn(jax.tree.unflatten(treedef, lv), xx))(leaves, x)
    found: list = []
    outs, _ = _eval_capturing(closed.jaxpr, closed.consts, [*leaves, x], [False] * len(leaves) + [True], found)
    return outs[0], found


def _safe_norm(g, q, axis):
    """||g||_q along `axis` with a finite gradient at g = 0 (the l2 case: sqrt of a positive stand-in)."""
    if q == np.inf:
        return take_max(jnp.abs(g), axis=axis)
    if q == 1:
        return jnp.sum(jnp.abs(g), axis=axis)
    sq = jnp.sum(g * g, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _ratio_or_inf(num, den):
    """num / den, +inf where den == 0 (a hyperplane that does not exist on the region), gradient finite."""
    pos = den > 0
    return jnp.where(pos, num / jnp.where(pos, den, 1.0), jnp.inf)


def mmr_distances(params, x, y, *, apply_fn: Callable, p=np.inf) -> tuple[jax.Array, jax.Array]:
    """l_p distances from each x to the hyperplanes of its linear region and to its decision hyperplanes.

    x `[batch, ...]`, y `[batch]` int labels. Returns (d_boundary `[batch, n]`, d_decision `[batch, K]`):
    d_boundary[b, i] = |z_i(x_b)| / ||grad_x z_i(x_b)||_q over all n hidden ReLU units (the order of
    `preactivations`, row-major within a layer); d_decision[b, j] = (f_y - f_j)(x_b) / ||grad_x (f_y - f_j)||_q
    (negative when x_b is misclassified), +inf at j = y. q is dual to p (l_inf -> l1 gradients). A zero gradient
    gives +inf (the hyperplane is not there). Exact for piecewise-affine nets: within the region the gradients
    are the rows of its affine map, computed per example by `jax.jacfwd` (hidden units; under `vmap` the first
    layer's Jacobian is computed once for the batch) and `jax.jacrev` (the K logits).
    """
    q = dual(p)

    def one(xi, yi):
        def hidden(v):
            return jnp.concatenate([z.reshape(-1) for z in preactivations(apply_fn, params, v[None])[1]])
        logits, zs = preactivations(apply_fn, params, xi[None])
        z = jnp.concatenate([zz.reshape(-1) for zz in zs])                       # [n]
        Jz = jax.jacfwd(hidden)(xi).reshape(z.shape[0], -1)                      # [n, d]
        Jf = jax.jacrev(lambda v: apply_fn(params, v[None])[0])(xi)              # [K, ...]
        Jf = Jf.reshape(Jf.shape[0], -1)
        d_b = _ratio_or_inf(jnp.abs(z), _safe_norm(Jz, q, -1))
        margin = logits[0, yi] - logits[0]                                       # [K]
        d_d = _ratio_or_inf(margin, _safe_norm(Jf[yi][None] - Jf, q, -1))
        d_d = jnp.where(jnp.arange(margin.shape[0]) == yi, jnp.inf, d_d)
        return d_b, d_d

    return jax.vmap(one)(x, y)


def _count(k, n: int, name: str) -> int:
    """k as a count out of n: an int >= 1 (at most n), or a fraction in (0, 1) of n (at least 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) or not k > 0:
        raise ValueError(f"{name} must be a positive int or a fraction in (0, 1), got {k!r}")
    if isinstance(k, (float, np.floating)) and k < 1:
        return max(1, int(round(k * n)))
    if float(k) != int(k):
        raise ValueError(f"{name} must be a positive int or a fraction in (0, 1), got {k!r}")
    return min(int(k), n)


def _mean_hinge_smallest(d, k: int, gamma: float) -> jax.Array:
    """mean over the batch of (1/k) sum over the k smallest d_i of max(0, 1 - d_i / gamma); d `[batch, n]`."""
    smallest = -jax.lax.top_k(-d, k)[0]                                          # [batch, k]
    return jnp.mean(jnp.sum(jnp.maximum(0.0, 1.0 - smallest / gamma), -1) / k)


def mmr(weight: float, *, p=np.inf, gamma_boundary: float = 0.2, gamma_decision: float = 0.2,
        k_boundary: int | float = 0.05, k_decision: int | None = None) -> Term:
    """weight * MMR, the maximum margin regularizer of Croce, Andriushchenko, Hein (AISTATS 2019):

      MMR = (1/k_B) sum_{k_B smallest i} max(0, 1 - d_B,i / gamma_B) + (1/k_D) sum_{k_D smallest j}
            max(0, 1 - d_D,j / gamma_D),

    averaged over the batch, with the distances of `mmr_distances` (hidden-unit hyperplanes d_B over all
    ReLU units of all layers together, decision hyperplanes d_D; the true class counts as +inf, so with the
    default k_D = K it adds a 0, as in the authors' code, which divides by K).

    p: the threat model (1, 2, inf); gradients are measured in the dual norm. gamma_*: the margins pushed
      for (the paper's MNIST CNN l_inf setting: weight 0.5, gamma 0.2; methods.md 5).
    k_boundary: how many unit hyperplanes count: an int, or a fraction in (0, 1) of all hidden units (the
      paper decays it from 10 % to 2 % over training; fixed here, as is weight, which the paper ramps up
      over 10 epochs). k_decision: an int <= K, None for K.

    Returns term(params, x `[batch, ...]`, y `[batch]`, *, apply_fn, key) -> scalar (key unused). The
    cost is the batch's Jacobians `[batch, n, d]` of the hidden units of layers 2.., plus K vjps per example.
    """
    p = check_norm(p)
    gamma_boundary = validate.positive_float(gamma_boundary, "gamma_boundary")
    gamma_decision = validate.positive_float(gamma_decision, "gamma_decision")
    _count(k_boundary, 10 ** 9, "k_boundary")
    if k_decision is not None:
        _count(k_decision, 10 ** 9, "k_decision")

    def term(params, x, y, *, apply_fn, key):
        del key
        d_b, d_d = mmr_distances(params, x, y, apply_fn=apply_fn, p=p)
        kb = _count(k_boundary, d_b.shape[1], "k_boundary")
        kd = d_d.shape[1] if k_decision is None else _count(k_decision, d_d.shape[1], "k_decision")
        reg = (_mean_hinge_smallest(d_b, kb, gamma_boundary) if d_b.shape[1] else 0.0) \
            + _mean_hinge_smallest(d_d, kd, gamma_decision)
        return weight * reg
    return term


register("mmr", mmr)
