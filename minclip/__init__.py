"""minclip: learn CLIP by building it.

Every piece of OpenAI's CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision") written by hand in small files a learner can read in one sitting: multi-head self-attention, a causal
text Transformer, a Vision Transformer, byte-level BPE and the symmetric InfoNCE loss. See README.md.
"""

import importlib
import sys
import types

from .loss import ClipLoss, SigLipLoss, clip_loss, siglip_loss
from .model import CLIP, CLIPConfig, load_openai_checkpoint
from .tokenizer import BPETokenizer

__version__ = "0.1.0"
__all__ = ["CLIP", "CLIPConfig", "load_openai_checkpoint", "BPETokenizer", "clip_loss", "ClipLoss", "siglip_loss",
           "SigLipLoss", "TrainConfig", "train", "load"]
_LAZY_NAMES = {"TrainConfig": ".train", "train": ".train", "load": ".checkpoint"}  # name -> module that defines it


def __getattr__(name):
    # Loaded on first use (PEP 562) so that importing a model module never loads training, data or evaluation code.
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY_NAMES[name], __name__)
    globals()[name] = getattr(module, name)
    return globals()[name]


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # `import minclip.train` binds the submodule to the name `train`; keep that name for the function, as before.
        if name == "train" and isinstance(value, types.ModuleType):
            value = value.train
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
