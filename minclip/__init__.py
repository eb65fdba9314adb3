"""minclip: learn CLIP by building it.

Every piece of OpenAI's CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision") written by hand in small files a learner can read in one sitting: multi-head self-attention, a causal
text Transformer, a Vision Transformer, byte-level BPE and the symmetric InfoNCE loss. See README.md.
"""

__version__ = "0.1.0"

from .model import CLIP, CLIPConfig, load_openai_checkpoint

__all__ = ["CLIP", "CLIPConfig", "load_openai_checkpoint"]
