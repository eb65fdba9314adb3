"""Test-wide settings: fast mode for every notebook (read by minclip/fastmode.py), a headless plotting backend, and
the checkout on the notebook kernels' import path (they start in notebooks/, where `import minclip` would otherwise
find nothing unless the package is installed)."""

import os
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent)
os.environ.setdefault("MINCLIP_FAST", "1")  # the notebook kernels started by nbval inherit these
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
