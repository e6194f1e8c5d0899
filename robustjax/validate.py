"""Input checks shared by every public function: each raises a ValueError that names the argument, what was
expected and what came. No silent wrong answer on bad input (an empty batch is valid input)."""
from __future__ import annotations

import numbers

import numpy as np


def batch(x, name: str = "x", *, example_shape=None, dtype_kind: str = "f", finite: bool = True) -> np.ndarray:
    """x as an array `[batch, ...]`; checks ndim >= 2 (or exactly `[batch, *example_shape]`), floating
    dtype (dtype_kind 'f') and, unless finite=False, no NaN or inf."""
    a = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"{name} must be batched, [batch, ...]; got shape {tuple(a.shape)}")
    if example_shape is not None and tuple(a.shape[1:]) != tuple(example_shape):
        raise ValueError(f"{name} must have shape [batch, {', '.join(map(str, example_shape))}]; "
                         f"got {tuple(a.shape)}")
    if dtype_kind == "f" and not np.issubdtype(np.dtype(a.dtype), np.floating):
        raise ValueError(f"{name} must be floating point, got dtype {a.dtype}")
    if finite and a.size and not bool(np.all(np.isfinite(np.asarray(a)))):
        bad = int(np.sum(~np.isfinite(np.asarray(a))))
        raise ValueError(f"{name} contains NaN or inf ({bad} entries)")
    return a


def labels(y, n: int, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """y as int32 `[n]`; integers in [0, num_classes) when num_classes is given."""
    a = np.asarray(y)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the batch, got {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
    if num_classes is not None and a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) (the model has {num_classes} classes); "
                         f"got min {int(a.min())}, max {int(a.max())}")
    return a.astype(np.int32)


def positive_int(v, name: str, *, allow_zero: bool = False) -> int:
    """v as int; ValueError unless it is an integer > 0 (>= 0 with allow_zero)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if not (isinstance(v, numbers.Real) and float(v).is_integer()):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    lo = 0 if allow_zero else 1
    if int(v) < lo:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return int(v)


def positive_float(v, name: str, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """v as float; ValueError unless finite (or inf with allow_inf) and > 0 (>= 0 with allow_zero)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if np.isnan(f) or (np.isinf(f) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if f < 0 or (f == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return f


def per_example(v, n: int, name: str, *, allow_zero: bool = True, allow_inf: bool = False) -> np.ndarray:
    """A scalar or `[n]` array of non-negative radii (e.g. eps) as float64 `[n]`."""
    a = np.asarray(v, np.float64)
    if a.ndim == 0:
        a = np.full((n,), float(a))
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {a.shape}")
    if np.isnan(a).any() or (np.isinf(a).any() and not allow_inf):
        raise ValueError(f"{name} must be finite, got {a[~np.isfinite(a)][:3]}")
    if (a < 0).any() or (not allow_zero and (a == 0).any()):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got min {a.min()}")
    return a


def key(k, name: str = "key"):
    """A jax.random key (new-style or raw uint32 [2]); ValueError for None or anything else."""
    import jax
    if k is None:
        raise ValueError(f"{name} must be a jax.random key (e.g. jax.random.key(0)), got None")
    dt = getattr(k, "dtype", None)
    if dt is not None and (jax.dtypes.issubdtype(dt, jax.dtypes.prng_key) or
                           (np.dtype(dt) == np.uint32 and tuple(k.shape) == (2,))):
        return k
    raise ValueError(f"{name} must be a jax.random key (e.g. jax.random.key(0)), got {type(k).__name__}")


def model_error(e: Exception, what: str) -> ValueError:
    """The ValueError for a user's model that failed: `what` (which call, on which input), then the original
    error's type and first line (chain it with `from e`)."""
    first = str(e).splitlines()[0] if str(e) else ""
    return ValueError(f"{what} ({type(e).__name__}: {first})")
