"""Experiment configs as data: each module has get_config(arg) with a quick variant."""
