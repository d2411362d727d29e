"""Sampling from trained models: `archdsl sample` (cli.py) and text generation from language
models, step by step with carried recurrent state (lm.py)."""
