"""Experiment configs as data: each module has get_config(arg) with a quick variant.

`load_config(name, arg)` returns `get_config(arg)` of scripts/configs/<name>.py; `check_config`
fills defaults and rejects stale keys (configs are plain dicts, one locked set of keys each).
"""
from __future__ import annotations

import importlib


def load_config(name: str, arg: str = "") -> dict:
    """get_config(arg) of the config module `name` (scripts/configs/<name>.py)."""
    return importlib.import_module(f"{__name__}.{name}").get_config(arg)


def check_config(config: dict, defaults: dict) -> dict:
    """config with missing keys taken from defaults; unknown keys are an error (stale configs)."""
    bad = set(config) - set(defaults)
    if bad:
        raise ValueError(f"unknown config key(s) {sorted(bad)}; known: {sorted(defaults)}")
    return {**defaults, **config}
