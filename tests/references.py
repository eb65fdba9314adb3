"""Reference implementations the tests compare against, loaded file by file from installed wheels.

OpenAI's CLIP (`clip-anytorch` on PyPI) and open_clip (`open-clip-torch`) are installed by `make setup` without their
dependencies. Their package `__init__` files import torchvision, which minclip does not use, so we load only the
single files we compare against (`clip/model.py`, `clip/simple_tokenizer.py`, `open_clip/loss.py`). Their code is
never copied into minclip: it is only the oracle.
"""

import functools
import importlib.util
import sysconfig
from pathlib import Path

import pytest


def _site_file(package: str, filename: str) -> Path:
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]) / package / filename
        if path.exists():
            return path
    pytest.fail(
        f"reference file {package}/{filename} not found; install the references with "
        "`pip install --no-deps clip-anytorch==2.6.0 open-clip-torch==3.3.0` (make setup does this)"
    )


@functools.cache
def _load(package: str, filename: str):
    path = _site_file(package, filename)
    spec = importlib.util.spec_from_file_location(f"reference_{package}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def openai_clip_model():
    """OpenAI's `clip/model.py` (CLIP, build_model, VisionTransformer, ...)."""
    return _load("clip", "model.py")


def openai_simple_tokenizer():
    """OpenAI's `clip/simple_tokenizer.py` (needs ftfy and regex)."""
    return _load("clip", "simple_tokenizer.py")


def open_clip_loss():
    """open_clip's `loss.py` (ClipLoss, SigLipLoss, gather_features)."""
    return _load("open_clip", "loss.py")


def openai_bpe_path() -> Path:
    """Path of OpenAI's merges file `bpe_simple_vocab_16e6.txt.gz` inside the clip wheel."""
    return _site_file("clip", "bpe_simple_vocab_16e6.txt.gz")
