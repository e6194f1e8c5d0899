"""The `robustjax` command: reproduce the talk and write a report folder (scripts/reproduce.py), or verify a
network against a property.

    robustjax --quick        # minutes on a 2-core CPU, offline, on the MNIST copy that ships with the package
    robustjax                # the reduced CPU scale of every experiment
    robustjax --full         # the talk's scale (needs a GPU)
    robustjax verify NET.onnx PROP.vnnlib --timeout 300 [--out RESULT] [--cache-dir DIR]
    robustjax --help
"""
from __future__ import annotations

import argparse
import os
import sys

DEFAULT_CACHE = "~/.cache/robustjax/jax"


def verify_main(argv) -> int:
    """`robustjax verify`: prints and writes the VNN-COMP result format (holds / violated with the
    counterexample / timeout / unknown); exit status 0 for a decided property, 1 for unknown or timeout, 2 for an
    unreadable network or property or one that does not fit the network."""
    parser = argparse.ArgumentParser(prog="robustjax verify", description="Verify an ONNX network against a "
                                     "VNN-LIB property (the competition's local-robustness subset).")
    parser.add_argument("onnx", help="the network, an ONNX file")
    parser.add_argument("vnnlib", help="the property, a VNN-LIB file")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--out", help="write the result here (VNN-COMP format)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--cache-dir", default=os.environ.get("ROBUSTJAX_CACHE_DIR", DEFAULT_CACHE),
                        help="JAX's persistent compilation cache, so that a second property of a network (a new "
                        "process) reuses the first's compiled programs (default $ROBUSTJAX_CACHE_DIR or "
                        f"{DEFAULT_CACHE}; '' turns it off; a cache JAX already has configured is kept)")
    args = parser.parse_args(argv)
    compilation_cache(args.cache_dir)
    from robustjax import complete, vnnlib
    from robustjax.network.from_onnx import from_onnx
    try:
        graph = from_onnx(args.onnx)
        prop = vnnlib.load(args.vnnlib)
        complete.check_fits(graph, prop)
    except (ValueError, OSError) as e:
        print(f"robustjax verify: {e}", file=sys.stderr)
        return 2
    res = complete.verify_property(graph, prop, time_limit=args.timeout, progress=not args.quiet)
    text = format_result(res)
    print(text, end="")
    print(f"# stage {res.stage or '-'}, lower bound {res.lower_bound:.6g}, {res.domains} subdomains, "
          f"{res.time_s:.1f} s", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0 if res.status in ("verified", "counterexample") else 1


def compilation_cache(path: str) -> str | None:
    """Points JAX's persistent compilation cache at path (created; '~' expanded) unless path is empty or JAX
    already has a cache directory (e.g. from JAX_COMPILATION_CACHE_DIR); returns the directory in use. The
    programs of bounds and branch and bound take the weights and the property as arguments, so the cache serves
    every property of a network of the same architecture."""
    import jax
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    if not path:
        return None
    path = os.path.expanduser(path)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def format_result(res) -> str:
    """The VNN-COMP result file: 'holds', 'violated' plus the counterexample's X_i and Y_j, 'timeout' or 'unknown'."""
    if res.status == "verified":
        return "holds\n"
    if res.status == "counterexample":
        lines = ["violated", "("]
        lines += [f"(X_{i} {float(v)!r})" for i, v in enumerate(res.counterexample)]
        lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(res.outputs)]
        return "\n".join(lines + [")"]) + "\n"
    return f"{res.status}\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "verify":
        return verify_main(argv[1:])
    from robustjax.experiments import reproduce
    return reproduce.main(argv)


if __name__ == "__main__":
    sys.exit(main())
