"""Test-wide settings: fast mode for every notebook (read by minclip/fastmode.py), a headless plotting backend."""

import os

os.environ.setdefault("MINCLIP_FAST", "1")  # the notebook kernels started by nbval inherit it
os.environ.setdefault("MPLBACKEND", "Agg")
