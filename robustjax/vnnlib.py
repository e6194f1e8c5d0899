"""VNN-LIB properties (the SMT-LIB subset of the VNN competitions) for local robustness.

A property file declares inputs `X_0 .. X_{n-1}` and outputs `Y_0 .. Y_{K-1}` and asserts the *unsafe* set:
the property is violated (SAT) when some input satisfying the input constraints produces outputs in it,
and holds (UNSAT) when none does. Supported subset: per-input bounds `(<= X_i c)`, `(>= X_i c)` (also
written `(<= c X_i)`, repeated bounds intersect) conjoined at top level, and output constraints that are
linear inequalities in Y (`(<= e1 e2)` / `(>= e1 e2)` with e built from numbers, `Y_j`, `+`, `-` and `*`
by a constant), combined by `and` and `or` into a disjunction of conjunctions. Anything else (input
disjunctions, inputs and outputs in one inequality, non-linear terms, other commands) raises a
`VnnlibError` naming the construct and the line.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

_MAX_DISJUNCTS = 10_000


class VnnlibError(ValueError):
    """A VNN-LIB file outside the supported subset (or malformed): the message names the construct."""


class Property(NamedTuple):
    """A local-robustness property.

    lo, hi: `[n_inputs]` float64 input bounds (flattened in the network's input order).
    unsafe: disjuncts `(A [m, K], b [m])`; an output y is unsafe iff `A y <= b` holds for some disjunct.
    num_outputs: K.
    """
    lo: np.ndarray
    hi: np.ndarray
    unsafe: tuple
    num_outputs: int

    def violated_rows(self, Y, *, tol: float = 0.0) -> np.ndarray:
        """Per row of outputs Y `[n, K]`: whether it lies in the unsafe set (A y <= b + tol for some disjunct),
        in float64 -> `[n]` bool."""
        Y = np.asarray(Y, np.float64).reshape(-1, self.num_outputs)
        hit = np.zeros(len(Y), bool)
        for A, b in self.unsafe:
            hit |= np.all(Y @ A.T <= b + tol, -1)
        return hit

    def violated_by(self, y, *, tol: float = 0.0) -> bool:
        """Whether outputs y `[K]` lie in the unsafe set (`violated_rows` of one row)."""
        return bool(self.violated_rows(np.reshape(y, (1, -1)), tol=tol)[0])

    def unsafe_margin(self, y) -> float:
        """max over disjuncts of min_rows (b - A y): > 0 strictly inside the unsafe set, < 0 safe (float64)."""
        y = np.asarray(y, np.float64).reshape(-1)
        return max(float(np.min(b - A @ y)) for A, b in self.unsafe)

    def robustness_label(self) -> int | None:
        """The class c when the property is 'argmax y = c' (every disjunct one row y_c - y_j <= 0), else None."""
        cs = set()
        for A, b in self.unsafe:
            if A.shape[0] != 1 or b[0] != 0:
                return None
            pos, neg = np.flatnonzero(A[0] > 0), np.flatnonzero(A[0] < 0)
            if len(pos) != 1 or len(neg) != 1 or A[0, pos[0]] != 1 or A[0, neg[0]] != -1:
                return None
            cs.add(int(pos[0]))
        if len(cs) != 1 or len(self.unsafe) != self.num_outputs - 1:
            return None
        return cs.pop()


# ------------------------------------------------------------------------------------------ parsing

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _tokens(text: str):
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split(";", 1)[0]
        for m in _TOKEN.finditer(line):
            yield m.group(0), lineno


def _sexprs(text: str):
    """Top-level s-expressions as nested lists of (token, line) leaves; each list carries its start line."""
    stack, out = [], []
    for tok, line in _tokens(text):
        if tok == "(":
            stack.append(_List(line))
        elif tok == ")":
            if not stack:
                raise VnnlibError(f"line {line}: unbalanced ')'")
            done = stack.pop()
            (stack[-1] if stack else out).append(done)
        else:
            if not stack:
                raise VnnlibError(f"line {line}: token {tok!r} outside any expression")
            stack[-1].append(_Atom(tok, line))
    if stack:
        raise VnnlibError(f"line {stack[-1].line}: unclosed '('")
    return out


class _Atom(str):
    def __new__(cls, tok, line):
        s = super().__new__(cls, tok)
        s.line = line
        return s


class _List(list):
    def __init__(self, line):
        super().__init__()
        self.line = line


def _line(e):
    return getattr(e, "line", "?")


def _show(e) -> str:
    if isinstance(e, list):
        return "(" + " ".join(_show(a) for a in e) + ")"
    return str(e)


_VAR = re.compile(r"^([XY])_(\d+)$")


def _linear(e, decl):
    """A linear expression as ({(kind, index): coef}, const)."""
    if not isinstance(e, list):
        m = _VAR.match(e)
        if m:
            if str(e) not in decl:
                raise VnnlibError(f"line {_line(e)}: variable {e} used but not declared")
            return {(m.group(1), int(m.group(2))): 1.0}, 0.0
        try:
            value = float(e)
        except ValueError:
            raise VnnlibError(f"line {_line(e)}: unsupported term {e!r} (expected a number, X_i or Y_j)") from None
        if not np.isfinite(value):
            raise VnnlibError(f"line {_line(e)}: the constant {e!r} is not a finite number")
        return {}, value
    if not e:
        raise VnnlibError(f"line {_line(e)}: empty expression")
    op, args = e[0], [_linear(a, decl) for a in e[1:]]
    if op == "+":
        return _add(args, [1.0] * len(args))
    if op == "-":
        if len(args) == 1:
            return _add(args, [-1.0])
        return _add(args, [1.0] + [-1.0] * (len(args) - 1))
    if op == "*":
        consts = [a for a in args if not a[0]]
        terms = [a for a in args if a[0]]
        if len(terms) > 1:
            raise VnnlibError(f"line {_line(e)}: non-linear product {_show(e)}")
        c = float(np.prod([a[1] for a in consts]))
        if not terms:
            return {}, c
        return {k: c * v for k, v in terms[0][0].items()}, c * terms[0][1]
    raise VnnlibError(f"line {_line(e)}: unsupported operator {op!r} in {_show(e)}")


def _add(args, signs):
    coef, const = {}, 0.0
    for (c, k), s in zip(args, signs):
        for var, v in c.items():
            coef[var] = coef.get(var, 0.0) + s * v
        const += s * k
    return coef, const


def _atom(e, decl):
    """(<= a b) / (>= a b) as one inequality sum coef * var <= rhs: (coef, rhs, line)."""
    op = e[0]
    if op in ("<", ">"):
        op = "<=" if op == "<" else ">="
    if op not in ("<=", ">=") or len(e) != 3:
        raise VnnlibError(f"line {_line(e)}: unsupported constraint {_show(e)} (expected (<= a b) or (>= a b))")
    (ca, ka), (cb, kb) = _linear(e[1], decl), _linear(e[2], decl)
    if op == ">=":
        (ca, ka), (cb, kb) = (cb, kb), (ca, ka)
    coef, const = _add([(ca, ka), (cb, kb)], [1.0, -1.0])          # a - b <= 0
    coef = {k: v for k, v in coef.items() if v != 0.0}
    return coef, -const, _line(e)


def _dnf(e, decl):
    """An and/or tree of atoms as a list of conjunctions (lists of atoms)."""
    if isinstance(e, list) and e and e[0] == "and":
        parts = [_dnf(a, decl) for a in e[1:]]
        out = [sum(combo, []) for combo in itertools.product(*parts)]
    elif isinstance(e, list) and e and e[0] == "or":
        out = [conj for a in e[1:] for conj in _dnf(a, decl)]
    elif isinstance(e, list) and e:
        return [[_atom(e, decl)]]
    else:
        raise VnnlibError(f"line {_line(e)}: unsupported assertion {_show(e)}")
    if len(out) > _MAX_DISJUNCTS:
        raise VnnlibError(f"line {_line(e)}: the output constraints expand to more than {_MAX_DISJUNCTS} disjuncts")
    return out


def parse(text: str) -> Property:
    """A `Property` from the text of a VNN-LIB file (see the module docstring for the subset)."""
    decl = {}
    asserts = []
    for e in _sexprs(text):
        if not isinstance(e, list) or not e:
            raise VnnlibError(f"line {_line(e)}: unexpected {_show(e)}")
        if e[0] == "declare-const":
            if len(e) != 3 or str(e[2]) != "Real" or not _VAR.match(e[1]):
                raise VnnlibError(f"line {_line(e)}: unsupported declaration {_show(e)} (expected X_i or Y_j Real)")
            decl[str(e[1])] = True
        elif e[0] == "assert":
            if len(e) != 2:
                raise VnnlibError(f"line {_line(e)}: assert takes one expression, got {_show(e)}")
            asserts.append(e[1])
        else:
            raise VnnlibError(f"line {_line(e)}: unsupported command {e[0]!r}")
    n_in = 1 + max((int(_VAR.match(v).group(2)) for v in decl if v[0] == "X"), default=-1)
    n_out = 1 + max((int(_VAR.match(v).group(2)) for v in decl if v[0] == "Y"), default=-1)
    for kind, n in (("X", n_in), ("Y", n_out)):
        missing = [i for i in range(n) if f"{kind}_{i}" not in decl]
        if n == 0 or missing:
            raise VnnlibError(f"the file must declare {kind}_0 .. {kind}_n consecutively; "
                              f"{'none declared' if n == 0 else f'missing {kind}_{missing[0]}'}")
    lo, hi = np.full(n_in, -np.inf), np.full(n_in, np.inf)
    out_conj: list = []       # top-level output atoms, conjoined to every disjunct
    out_dnf = [[]]
    for a in asserts:
        conjs = _dnf(a, decl)
        kinds = {var[0] for conj in conjs for coef, _, _ in conj for var in coef}
        if "X" in kinds and len(conjs) > 1:
            raise VnnlibError(f"line {_line(a)}: input constraints inside a disjunction are not supported "
                              "(only per-input bounds at top level)")
        if len(conjs) == 1:
            for coef, rhs, line in conjs[0]:
                kinds = {var[0] for var in coef}
                if kinds == {"X", "Y"}:
                    raise VnnlibError(f"line {line}: a constraint mixing inputs and outputs is not supported")
                if kinds != {"X"}:
                    out_conj.append((coef, rhs, line))
                    continue
                if len(coef) != 1:
                    raise VnnlibError(f"line {line}: only per-input bounds are supported for inputs, "
                                      f"got a constraint on {len(coef)} inputs")
                (_, i), c = next(iter(coef.items()))
                if c > 0:
                    hi[i] = min(hi[i], rhs / c + 0.0)
                else:
                    lo[i] = max(lo[i], rhs / c + 0.0)
        else:
            out_dnf = [d + c for d in out_dnf for c in conjs]
            if len(out_dnf) > _MAX_DISJUNCTS:
                raise VnnlibError(f"the output constraints expand to more than {_MAX_DISJUNCTS} disjuncts")
    unbounded = np.flatnonzero(~np.isfinite(lo) | ~np.isfinite(hi))
    if len(unbounded):
        raise VnnlibError(f"input X_{unbounded[0]} has no {'lower' if np.isinf(lo[unbounded[0]]) else 'upper'} "
                          f"bound ({len(unbounded)} inputs lack a bound)")
    if np.any(lo > hi):
        i = int(np.flatnonzero(lo > hi)[0])
        raise VnnlibError(f"input X_{i} has lo {lo[i]} > hi {hi[i]}: the input set is empty")
    unsafe = []
    for conj in out_dnf:
        rows = out_conj + conj
        if not rows:
            raise VnnlibError("the file asserts no output constraint")
        A = np.zeros((len(rows), n_out))
        b = np.zeros(len(rows))
        for r, (coef, rhs, _) in enumerate(rows):
            for (_, j), c in coef.items():
                A[r, j] += c
            b[r] = rhs
        unsafe.append((A, b))
    return Property(lo, hi, tuple(unsafe), n_out)


def load(path) -> Property:
    """`parse` of a VNN-LIB file; errors name the path."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise VnnlibError(f"cannot read VNN-LIB file {path}: {e}") from e
    try:
        return parse(text)
    except VnnlibError as e:
        raise VnnlibError(f"{path}: {e}") from None
