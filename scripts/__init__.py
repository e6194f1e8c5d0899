"""The runnable experiments (scripts/), importable as robustjax.experiments."""
