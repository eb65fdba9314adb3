"""Reference implementations the tests (and benchmarks/bench.py) compare against, loaded file by file from installed
wheels.

OpenAI's CLIP (`clip-anytorch` on PyPI) and open_clip (`open-clip-torch`) are installed by `make setup` without their
dependencies. Their package `__init__` files import torchvision, which minclip does not use, so we load only the
single files we compare against (`clip/model.py`, `clip/simple_tokenizer.py`, `open_clip/loss.py`). Their code is
never copied into minclip: it is only the oracle.

Three oracles need whole packages: OpenAI's image transform (`clip.clip._transform`) and open_clip's `create_model`
import torchvision. `make setup` installs it without its dependencies, as a test-only reference (minclip never
imports it); the tests that need it skip, saying so, when it is absent. Its wheel on PyPI is built against CUDA and
its compiled operators (`torchvision::nms`, ...) do not load beside the CPU build of torch; the transforms we compare
against are pure Python, so `torchvision()` imports it without registering those operators.
"""

import functools
import importlib
import importlib.util
import sys
import sysconfig
import types
from pathlib import Path

INSTALL = "pip install --no-deps clip-anytorch==2.6.0 open-clip-torch==3.3.0"


def _site_file(package: str, filename: str, required: bool = True) -> Path | None:
    """The installed file `package/filename`; when it is missing, None, or (`required`) the test fails saying how to
    install it."""
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]) / package / filename
        if path.exists():
            return path
    if not required:
        return None
    import pytest  # only the tests need it

    pytest.fail(f"reference file {package}/{filename} not found; install the references with `{INSTALL}` "
                "(make setup does this)")


@functools.cache
def _load(package: str, filename: str, required: bool = True):
    """One file of an installed wheel, imported on its own (not through its package's `__init__`)."""
    path = _site_file(package, filename, required)
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location(f"reference_{package}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def openai_clip_model(required: bool = True):
    """OpenAI's `clip/model.py` (CLIP, build_model, VisionTransformer, ...); None if it is not installed and not
    `required` (the benchmark then skips its comparison)."""
    return _load("clip", "model.py", required)


def openai_simple_tokenizer():
    """OpenAI's `clip/simple_tokenizer.py` (needs ftfy and regex)."""
    return _load("clip", "simple_tokenizer.py")


def open_clip_loss():
    """open_clip's `loss.py` (ClipLoss, SigLipLoss, gather_features)."""
    return _load("open_clip", "loss.py")


def openai_bpe_path() -> Path:
    """Path of OpenAI's merges file `bpe_simple_vocab_16e6.txt.gz` inside the clip wheel."""
    return _site_file("clip", "bpe_simple_vocab_16e6.txt.gz")


@functools.cache
def torchvision():
    """torchvision (a test-only reference), or skip the test when it is not installed.

    Its `_meta_registrations` module registers fake kernels for compiled operators that the CUDA wheel cannot load
    beside the CPU build of torch; it is replaced by an empty module, which only the compiled operators miss.
    """
    if importlib.util.find_spec("torchvision") is None:
        import pytest

        pytest.skip("torchvision is not installed; it is a test-only reference: "
                    "pip install --no-deps torchvision==0.28.0 (make setup does this)")
    name = "torchvision._meta_registrations"
    sys.modules.setdefault(name, types.ModuleType(name))
    return importlib.import_module("torchvision")


@functools.cache
def openai_clip_package():
    """OpenAI's `clip` package as a whole (`clip.clip._transform`, `clip.load`, ...); needs torchvision.

    Its `clip.py` imports `packaging` through `pkg_resources`, which recent setuptools no longer ship: when it is
    missing, a stand-in holding `packaging` is used for the import only.
    """
    torchvision()
    if importlib.util.find_spec("pkg_resources") is not None:
        return importlib.import_module("clip")
    import packaging.version

    sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)
    try:
        return importlib.import_module("clip")
    finally:
        del sys.modules["pkg_resources"]


def openai_transform(n_px: int):
    """OpenAI's `preprocess` of `clip.load` for `n_px` inputs (torchvision: Resize, CenterCrop, RGB, ToTensor,
    Normalize)."""
    return openai_clip_package().clip._transform(n_px)


@functools.cache
def open_clip():
    """The open_clip package (`create_model`, `add_model_config`); needs torchvision."""
    torchvision()
    return importlib.import_module("open_clip")
