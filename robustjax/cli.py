"""The `robustjax` command: reproduce the talk and write a report folder (scripts/reproduce.py).

    robustjax --quick        # minutes on a 2-core CPU, offline, on the MNIST copy that ships with the package
    robustjax                # the reduced CPU scale of every experiment
    robustjax --full         # the talk's scale (needs a GPU)
    robustjax --help
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from robustjax.experiments import reproduce
    return reproduce.main(argv)


if __name__ == "__main__":
    sys.exit(main())
