"""Fast mode: one switch that shrinks data and training so the tests can execute every notebook in seconds.

Learners run the notebooks in full mode (the default): real data sizes, real training, real results. The test suite
sets the environment variable ``MINCLIP_FAST=1`` (see the repository's ``conftest.py``), and every notebook picks its
sizes through :func:`choose`, so the same cells run top to bottom in both modes. This module is the only place that
reads the variable.
"""

import os

FAST: bool = os.environ.get("MINCLIP_FAST", "0").strip().lower() not in ("", "0", "false", "no")


def choose(full, fast):
    """``fast`` in fast mode, else ``full``: e.g. ``epochs = choose(full=30, fast=1)``."""
    return fast if FAST else full
