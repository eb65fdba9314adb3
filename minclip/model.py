"""CLIP: an image tower and a text tower that meet in one embedding space; its config, presets and OpenAI interop.

    images (B, 3, H, W) ─ visual ─> (B, E) ─ normalise ─┐
                                                        ├─ exp(logit_scale) * cosine similarities ─> (B, B) logits
    tokens (B, T)       ─ text   ─> (B, E) ─ normalise ─┘

The towers never look at each other: the only place image and text meet is the similarity matrix, whose diagonal
holds the matching pairs that the contrastive loss (``minclip.loss``) pushes up. ``logit_scale`` is a learned inverse
temperature stored in log space (so it stays positive and its steps are relative), starting at ``log(1 / 0.07)``;
training usually clamps it at ``log(100)``. Cosine similarities live in ``[-1, 1]``; without that scale a softmax
over them would be almost flat. A model trained with the sigmoid loss (SigLIP) also learns a bias ``logit_bias``,
added to every logit; it exists only when ``CLIPConfig.init_logit_bias`` is set.

``CLIPConfig`` holds every size; ``CLIPConfig.preset(name)`` gives named ones, from ``nano`` (tests) to OpenAI's
``ViT-B/32``. ``CLIP.from_openai_state_dict`` / ``load_openai_checkpoint`` read OpenAI's released weights (the ViTs,
and the ResNets through ``modified_resnet.py``) and ``to_openai_state_dict`` writes them back: inside each tower our
parameter names are OpenAI's, and the text tower's live under ``text.`` here while OpenAI keeps them at the top level.
``to_open_clip_config`` / ``save_open_clip`` write what open_clip's ``create_model`` reads: its model config (which,
unlike OpenAI's format, stores the heads) and the same state dict.

Reference: Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision", section
2.4 and figure 3; openai/CLIP ``clip/model.py`` for the layout and initialisation.
"""

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if __package__:  # inside a package (minclip, or a folder the model files were copied into)
    from .attention import IMPLEMENTATIONS
    from .text import POOLINGS, TextTransformer
    from .transformer import ACTIVATIONS
    from .vision import ResNetEncoder, VisionTransformer
else:  # copied as loose files side by side
    from attention import IMPLEMENTATIONS
    from text import POOLINGS, TextTransformer
    from transformer import ACTIVATIONS
    from vision import ResNetEncoder, VisionTransformer

IMAGE_ENCODERS = ("vit", "resnet", "modified_resnet")
# OpenAI CLIP's per-channel statistics of its training images (RGB, on a 0..1 scale): a model's input is
# (pixel - mean) / std. They live here, with the model, because they are part of what a checkpoint expects; the data
# code (minclip.data.to_model_input, minclip.preprocess) imports them, and the open_clip export records them.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CLIPConfig:
    """Every size and choice of a CLIP model. The defaults are the ``tiny`` preset (the CPU tutorial model).

    Build one from a preset and change what you like, e.g. to match a trained tokenizer::

        CLIPConfig.preset("tiny", vocab_size=tok.vocab_size, sot_token_id=tok.sot_token_id,
                          eot_token_id=tok.eot_token_id)
    """

    embed_dim: int = 128  # size of the joint embedding space both towers project into
    # --- image tower ---
    image_encoder: str = "vit"  # "vit": CLIP's ViT; "resnet": a small ResNet (vision.py); "modified_resnet":
    #                             OpenAI's RN50 kind (modified_resnet.py): resnet_width, resnet_layers, vision_heads
    image_size: int = 64  # images are (B, 3, image_size, image_size)
    patch_size: int = 16  # ViT patch side in pixels, dividing image_size; (image_size / patch_size)^2 + 1 tokens
    vision_width: int = 128  # ViT token width
    vision_layers: int = 4  # ViT residual blocks
    vision_heads: int = 4  # ViT attention heads; must divide vision_width (OpenAI: vision_width // 64). With
    #                        modified_resnet: the attention pool's heads, dividing 32 * resnet_width (OpenAI: / 64)
    resnet_width: int = 32  # ResNet: channels of the first stage; each later stage doubles them
    resnet_layers: tuple[int, ...] = (1, 1, 1, 1)  # ResNet: blocks per stage (modified_resnet: four stages)
    # --- text tower ---
    vocab_size: int = 4096  # number of token ids, special tokens included (OpenAI: 49408)
    context_length: int = 32  # most tokens per text, start and end tokens included (OpenAI: 77)
    sot_token_id: int | None = None  # start-of-text id; None means vocab_size - 2 (OpenAI's layout)
    eot_token_id: int | None = None  # end-of-text id, the token the text is pooled at; None means vocab_size - 1
    text_width: int = 128  # text Transformer width
    text_layers: int = 4  # text Transformer residual blocks
    text_heads: int = 4  # text attention heads; must divide text_width (OpenAI: text_width // 64)
    text_pooling: str = "eot"  # "eot": causal, pooled at the first EOT (CLIP); "first": bidirectional, [CLS]-style
    # --- both towers ---
    activation: str = "quick_gelu"  # MLP activation: "quick_gelu" (OpenAI's weights need it) or "gelu"
    attn_impl: str = "manual"  # "manual": hand-written attention; "sdpa": F.scaled_dot_product_attention (fused)
    # Training's shortcuts (speedups.py): the same features for less work, by computing only the read token in each
    # tower's last block and QuickGELU as one fused SiLU. How the model runs, not what it is: configs that differ only
    # here compare equal.
    fast_path: bool = dataclasses.field(default=False, compare=False)  # False: the plain towers, as written
    init_logit_scale: float = math.log(1 / 0.07)  # initial log inverse temperature: exp(2.659) = 14.3
    init_logit_bias: float | None = None  # SigLIP: a learned bias added to every logit, starting here; None: no bias

    def __post_init__(self):
        self.resnet_layers = tuple(self.resnet_layers)  # JSON round trips turn tuples into lists
        if self.sot_token_id is None:
            self.sot_token_id = self.vocab_size - 2
        if self.eot_token_id is None:
            self.eot_token_id = self.vocab_size - 1
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        choices = {"image_encoder": IMAGE_ENCODERS, "text_pooling": POOLINGS, "activation": ACTIVATIONS,
                   "attn_impl": IMPLEMENTATIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"CLIPConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("embed_dim", "image_size", "patch_size", "vision_width", "vision_layers", "vision_heads",
                     "resnet_width", "vocab_size", "context_length", "text_width", "text_layers", "text_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"CLIPConfig.{name} must be a positive int, got {value!r}")
        if not self.resnet_layers or any(not isinstance(n, int) or n <= 0 for n in self.resnet_layers):
            raise ValueError(f"CLIPConfig.resnet_layers must be positive ints, one per stage, got {self.resnet_layers}")
        if self.image_encoder == "vit" and self.image_size % self.patch_size:
            raise ValueError(f"CLIPConfig.image_size={self.image_size} must be divisible by "
                             f"patch_size={self.patch_size}")
        if self.image_encoder == "modified_resnet":
            if len(self.resnet_layers) != 4 or self.image_size % 32 or self.resnet_width % 2:
                raise ValueError(f"CLIPConfig with image_encoder='modified_resnet' needs 4 resnet_layers, an "
                                 f"image_size divisible by 32 and an even resnet_width; got {self.resnet_layers}, "
                                 f"{self.image_size} and {self.resnet_width}")
            if (32 * self.resnet_width) % self.vision_heads:
                raise ValueError(f"CLIPConfig.vision_heads={self.vision_heads} must divide the attention pool's width "
                                 f"32 * resnet_width = {32 * self.resnet_width}")
        for tower in ("vision", "text") if self.image_encoder == "vit" else ("text",):
            width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if width % heads:
                raise ValueError(f"CLIPConfig.{tower}_heads={heads} must divide {tower}_width={width}")
        for name in ("sot_token_id", "eot_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"CLIPConfig.{name} must be an id in [0, vocab_size={self.vocab_size}), got {value!r}")
        if self.sot_token_id == self.eot_token_id:
            raise ValueError(f"CLIPConfig.sot_token_id and eot_token_id must differ, both are {self.eot_token_id}")
        if self.init_logit_bias is not None and (isinstance(self.init_logit_bias, bool)
                                                 or not isinstance(self.init_logit_bias, (int, float))):
            raise ValueError(f"CLIPConfig.init_logit_bias must be a number (SigLIP: -10) or None, "
                             f"got {self.init_logit_bias!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "CLIPConfig":
        """A named configuration, optionally with some fields changed.

        >>> CLIPConfig.preset("ViT-B/32").vision_width
        768
        >>> CLIPConfig.preset("nano", text_pooling="first").text_pooling
        'first'
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CLIPConfig fields {sorted(unknown)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        """Plain dict (JSON-friendly); ``CLIPConfig(**config.to_dict())`` rebuilds it."""
        return dataclasses.asdict(self)


_OPENAI_TEXT = dict(vocab_size=49408, context_length=77, text_width=512, text_layers=12, text_heads=8)
PRESETS: dict[str, dict] = {
    # tests: ~58k parameters, milliseconds per step
    "nano": dict(embed_dim=32, image_size=16, patch_size=4, vision_width=32, vision_layers=2, vision_heads=2,
                 resnet_width=8, resnet_layers=(1, 1), vocab_size=64, context_length=32, text_width=32, text_layers=2,
                 text_heads=2),
    # the CPU tutorial default (the dataclass defaults): 64x64 images in 16x16 patches (17 image tokens), 4 + 4
    # blocks of width 128. Tuned on the emoji set for a 5-minute CPU budget: the cost of a ViT is in its tokens, not
    # its pixels, so the full 64x64 images cost about what 32x32 ones in 8x8 patches do, and the detail they keep
    # (a hand's shape, a skin tone) lifts held-out recall (see docs/experiments.md, "What we tried")
    "tiny": dict(),
    # a step up, for a GPU or a patient CPU: 64x64 images, 6 + 6 blocks of width 256
    "small": dict(embed_dim=256, image_size=64, patch_size=8, vision_width=256, vision_layers=6, vision_heads=4,
                  vocab_size=8192, context_length=64, text_width=256, text_layers=6, text_heads=4),
    # OpenAI's released shapes (Radford et al., 2021, table 20); QuickGELU as they were trained with
    "ViT-B/32": dict(embed_dim=512, image_size=224, patch_size=32, vision_width=768, vision_layers=12,
                     vision_heads=12, **_OPENAI_TEXT),
    "ViT-B/16": dict(embed_dim=512, image_size=224, patch_size=16, vision_width=768, vision_layers=12,
                     vision_heads=12, **_OPENAI_TEXT),
    "ViT-L/14": dict(embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=24,
                     vision_heads=16, **{**_OPENAI_TEXT, "text_width": 768, "text_heads": 12}),
}


class CLIP(nn.Module):
    """Contrastive Language-Image Pre-training model; see the module docstring.

    Example:
        >>> model = CLIP(CLIPConfig.preset("nano"))
        >>> images = torch.randn(4, 3, 16, 16)                                   # (B, 3, H, W), normalised
        >>> tokens = torch.tensor([[62, 5, 7, 63, 0, 0]] * 4)                     # (B, T): [sot, ids..., eot, pad]
        >>> logits_per_image, logits_per_text = model(images, tokens)
        >>> logits_per_image.shape                                               # (images, texts)
        torch.Size([4, 4])
    """

    def __init__(self, config: CLIPConfig):
        super().__init__()
        if not isinstance(config, CLIPConfig):
            raise TypeError(f"CLIP needs a CLIPConfig, got {type(config).__name__}; e.g. CLIPConfig.preset('tiny')")
        self.config = c = config
        vision_tower, text_tower = VisionTransformer, TextTransformer
        if c.fast_path:  # the same towers computed with training's shortcuts; imported here, as only they need it
            if __package__:
                from .speedups import FastTextTransformer as text_tower, FastVisionTransformer as vision_tower
            else:
                from speedups import FastTextTransformer as text_tower, FastVisionTransformer as vision_tower
        if c.image_encoder == "vit":
            self.visual = vision_tower(c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads,
                                       c.embed_dim, c.activation, c.attn_impl)
        elif c.image_encoder == "modified_resnet":  # imported here: the five model files still work without it
            if __package__:
                from .modified_resnet import ModifiedResNet
            else:
                from modified_resnet import ModifiedResNet
            self.visual = ModifiedResNet(c.image_size, c.resnet_width, c.resnet_layers, c.vision_heads, c.embed_dim)
            self.visual.init_openai_()
        else:
            self.visual = ResNetEncoder(c.image_size, c.resnet_width, c.resnet_layers, c.embed_dim)
        self.text = text_tower(c.vocab_size, c.context_length, c.text_width, c.text_layers, c.text_heads, c.embed_dim,
                               c.eot_token_id, c.text_pooling, c.activation, c.attn_impl)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.init_logit_scale)))  # 0-dim, as in OpenAI's weights
        # SigLIP's bias, 0-dim like open_clip's `logit_bias`; a None parameter is absent from the state dict
        self.register_parameter("logit_bias", None if c.init_logit_bias is None
                                else nn.Parameter(torch.tensor(float(c.init_logit_bias))))

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (as OpenAI's `model.dtype`): float32, or float16 after `.half()`."""
        return self.logit_scale.dtype

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``(B, 3, image_size, image_size)`` float images -> ``(B, embed_dim)`` features.

        Unnormalised by default, as OpenAI's ``encode_image``; ``normalize=True`` divides by the L2 norm.
        """
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``(B, T)`` token ids (``T <= context_length``, as ``tokenizer.tokenize``) -> ``(B, embed_dim)`` features.

        Unnormalised by default, as OpenAI's ``encode_text``; ``normalize=True`` divides by the L2 norm.
        """
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled cosine similarities of every image with every text.

        Returns ``(logits_per_image, logits_per_text)``: ``(B_images, B_texts)`` and its transpose. Row ``i`` of
        ``logits_per_image`` scores image ``i`` against every text; with matching pairs the diagonal is the target.
        A model with a ``logit_bias`` (SigLIP) adds it, so that ``sigmoid(logits)`` is its probability of a match.
        """
        image_features = self.encode_image(images, normalize=True)  # (B_i, E), unit length
        text_features = self.encode_text(tokens, normalize=True)  # (B_t, E), unit length
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.T  # (B_i, B_t)
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return logits_per_image, logits_per_image.T

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ OpenAI interop
    @classmethod
    def from_openai_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], vision_heads: int | None = None, text_heads: int | None = None,
        **overrides,
    ) -> "CLIP":
        """Build a model from an OpenAI-format state dict (keys of openai/CLIP's ``clip/model.py``: ViT or ResNet).

        Every size is read from the tensors' shapes; the numbers of heads are not stored, so they default to
        ``width // 64`` as OpenAI's ``build_model`` assumes (pass ``vision_heads``/``text_heads`` otherwise; a
        ResNet's attention pool is ``32 * width`` wide).
        QuickGELU is used, the integer entries of released checkpoints (``input_resolution``, ``context_length``,
        ``vocab_size``) are dropped, and fp16 weights are upcast to float32. ``overrides`` sets other
        :class:`CLIPConfig` fields (e.g. ``eot_token_id`` for a vocabulary not laid out like OpenAI's, ``attn_impl``).
        The model is returned in eval mode.
        """
        config = openai_config(state_dict, vision_heads, text_heads, **overrides)
        model = cls(config)
        ours = {}
        for key, value in state_dict.items():
            if key in _OPENAI_INT_ENTRIES:
                continue
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.to(torch.float32)
            ours[key if key.startswith("visual.") or key in _TOP_LEVEL else "text." + key] = value
        try:
            model.load_state_dict(ours)
        except RuntimeError as error:
            raise ValueError(f"the state dict does not fit the configuration read from its shapes: {error}") from None
        return model.eval()

    def to_openai_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under OpenAI's key names and shapes (loadable by openai/CLIP and open_clip).

        A SigLIP model's bias is exported as ``logit_bias``, the name open_clip's SigLIP models use; OpenAI's CLIP has
        no such weight, so drop that key before loading the dict into OpenAI's code.

        The numbers of heads are not stored: OpenAI's ``build_model`` takes them to be ``width // 64``. When this
        model's are not, OpenAI's loader would silently build another model from the same weights, so this warns;
        load such a file with minclip, giving the heads: ``load_openai_checkpoint(path, vision_heads=...,
        text_heads=...)`` (or ``CLIP.from_openai_state_dict(state_dict, vision_heads=..., text_heads=...)``).
        """
        state_dict = self._openai_layout()
        _warn_if_openai_heads_differ(self.config)
        return state_dict

    def _openai_layout(self) -> dict[str, torch.Tensor]:
        if self.config.image_encoder == "resnet":
            raise ValueError("minclip's small ResNet has no OpenAI layout (OpenAI's ResNets are image_encoder="
                             "'modified_resnet'); export a ViT or a modified_resnet model")
        return {key.removeprefix("text."): value.detach().clone() for key, value in self.state_dict().items()}

    # ------------------------------------------------------------------ open_clip export
    def to_open_clip_config(self) -> dict:
        """This model's architecture as an open_clip model config (the JSON of ``open_clip/model_configs``).

        Unlike OpenAI's format it states the heads: ``head_width`` (the width of one head) in ``vision_cfg`` and
        ``heads`` in ``text_cfg``. Text is pooled at the first end-of-text token (``pool_type`` ``argmax`` when EOT
        is the largest id, as in OpenAI's vocabulary, else ``eos`` with its id). open_clip's weights are this
        model's :meth:`to_openai_state_dict` (the same key names); :meth:`save_open_clip` writes both.
        """
        c = self.config
        if c.image_encoder == "resnet":
            raise ValueError("minclip's small ResNet has no open_clip equivalent; export a ViT or a modified_resnet "
                             "model")
        if c.text_pooling != "eot":
            raise ValueError(f"open_clip's text tower cannot pool like text_pooling={c.text_pooling!r} (minclip masks "
                             "the padding from its bidirectional attention); only 'eot' models export to open_clip")
        if c.image_encoder == "vit":
            vision = dict(image_size=c.image_size, layers=c.vision_layers, width=c.vision_width,
                          head_width=c.vision_width // c.vision_heads, patch_size=c.patch_size)
        else:  # open_clip's ModifiedResNet: width is the stem's, the attention pool is 32 * width wide
            vision = dict(image_size=c.image_size, layers=list(c.resnet_layers), width=c.resnet_width,
                          head_width=32 * c.resnet_width // c.vision_heads, patch_size=None)
        text = dict(context_length=c.context_length, vocab_size=c.vocab_size, width=c.text_width, heads=c.text_heads,
                    layers=c.text_layers)
        if c.eot_token_id != c.vocab_size - 1:  # argmax of the ids would not find the end of the text
            text.update(pool_type="eos", eos_id=c.eot_token_id)
        config = dict(embed_dim=c.embed_dim, quick_gelu=c.activation == "quick_gelu", vision_cfg=vision, text_cfg=text)
        if c.init_logit_bias is not None:  # SigLIP: open_clip creates its logit_bias only when this is set
            config["init_logit_bias"] = c.init_logit_bias
        return config

    def save_open_clip(self, folder, name: str = "minclip") -> dict[str, Path]:
        """Write what open_clip loads into ``folder``: ``{name}.json`` (the model config), ``open_clip_config.json``
        (the same under ``model_cfg``, with the preprocessing) and ``open_clip_pytorch_model.bin`` (the weights).

        Either load works in open_clip (nothing is downloaded)::

            open_clip.add_model_config("FOLDER/minclip.json")
            model = open_clip.create_model("minclip", pretrained="FOLDER/open_clip_pytorch_model.bin")
            model = open_clip.create_model("local-dir:FOLDER")

        Returns the three paths by kind: ``config``, ``local_dir_config``, ``weights``.
        """
        if not name or any(char in name for char in '/\\:'):
            raise ValueError(f"name must be a plain file name without slashes or colons, got {name!r}")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; the open_clip export is a folder of three files, give a folder")
        config = self.to_open_clip_config()
        preprocess = dict(size=self.config.image_size, mode="RGB", mean=list(CLIP_MEAN), std=list(CLIP_STD),
                          interpolation="bicubic", resize_mode="shortest")
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"config": folder / f"{name}.json", "local_dir_config": folder / "open_clip_config.json",
                 "weights": folder / "open_clip_pytorch_model.bin"}
        paths["config"].write_text(json.dumps(config, indent=2) + "\n")
        paths["local_dir_config"].write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess},
                                                        indent=2) + "\n")
        torch.save(self._openai_layout(), paths["weights"])
        return paths


def _warn_if_openai_heads_differ(config: CLIPConfig) -> None:
    """Warn when OpenAI's loader, which derives each tower's heads as width // 64, would not rebuild `config`."""
    widths = {"vision": ("vision_width", config.vision_width), "text": ("text_width", config.text_width)}
    if config.image_encoder == "modified_resnet":  # the attention pool is 32 * resnet_width wide
        widths["vision"] = ("32 * resnet_width", 32 * config.resnet_width)
    wrong = [f"{tower} {getattr(config, tower + '_heads')} heads (OpenAI's loader assumes {name} {width} // 64 = "
             f"{width // 64})" for tower, (name, width) in widths.items()
             if getattr(config, f"{tower}_heads") != width // 64]
    if wrong:
        warnings.warn(f"this model has {' and '.join(wrong)}: OpenAI's clip.load would not rebuild this model from "
                      "these weights. Load the file with minclip instead: load_openai_checkpoint(path, "
                      f"vision_heads={config.vision_heads}, text_heads={config.text_heads})", stacklevel=3)


_OPENAI_INT_ENTRIES = ("input_resolution", "context_length", "vocab_size")
_TOP_LEVEL = ("logit_scale", "logit_bias")  # parameters of neither tower, at the top level in both layouts
_OPENAI_TEXT_KEYS = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection",
                     "logit_scale")
_OPENAI_REQUIRED = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj",
                    *_OPENAI_TEXT_KEYS)
_OPENAI_RESNET_REQUIRED = ("visual.conv1.weight", "visual.layer1.0.conv1.weight",
                           "visual.attnpool.positional_embedding", *_OPENAI_TEXT_KEYS)


def openai_config(state_dict: Mapping, vision_heads: int | None = None, text_heads: int | None = None,
                  **overrides) -> CLIPConfig:
    """Read a :class:`CLIPConfig` from the shapes of an OpenAI-format state dict; see ``from_openai_state_dict``."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    if any(key.startswith("text.") for key in state_dict):
        raise ValueError("this looks like a minclip state dict (keys start with 'text.'): load it with "
                         "CLIP(config).load_state_dict(state_dict), not from_openai_state_dict")
    resnet = "visual.layer1.0.conv1.weight" in state_dict or "visual.attnpool.c_proj.weight" in state_dict
    missing = [key for key in (_OPENAI_RESNET_REQUIRED if resnet else _OPENAI_REQUIRED) if key not in state_dict]
    if missing:
        raise ValueError(f"not an OpenAI CLIP state dict: missing keys {missing}. Expected the key names of "
                         "openai/CLIP's clip/model.py, e.g. torch.jit.load('ViT-B-32.pt').state_dict()")

    def count(start: str) -> int:  # how many distinct indices follow `start`, e.g. in {start}{index}.ln_1.weight
        return len({key[len(start):].split(".")[0] for key in state_dict if key.startswith(start)})

    if resnet:  # OpenAI's ModifiedResNet: read its width, blocks per stage and input size from the shapes
        resnet_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]  # (width, width, 1, 1)
        grid = math.isqrt(state_dict["visual.attnpool.positional_embedding"].shape[0] - 1)  # image_size / 32 cells
        vision = dict(image_encoder="modified_resnet", image_size=32 * grid, resnet_width=resnet_width,
                      resnet_layers=tuple(count(f"visual.layer{stage}.") for stage in (1, 2, 3, 4)))
        vision_width = 32 * resnet_width  # the attention pool's width, which its heads divide
    else:
        conv = state_dict["visual.conv1.weight"]  # (width, 3, patch, patch)
        vision_width, patch_size = conv.shape[0], conv.shape[-1]
        grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)  # grid^2 patches + 1 class token
        vision = dict(image_encoder="vit", image_size=patch_size * grid, patch_size=patch_size,
                      vision_width=vision_width, vision_layers=count("visual.transformer.resblocks."))
    text_width = state_dict["ln_final.weight"].shape[0]
    vocab_size = state_dict["token_embedding.weight"].shape[0]
    vision_heads = vision_heads or vision_width // 64  # not stored: OpenAI's build_model assumes 64 channels a head
    text_heads = text_heads or text_width // 64
    for tower, width, heads in (("vision", vision_width, vision_heads), ("text", text_width, text_heads)):
        if heads == 0:  # a width under 64 (whether heads divide widths is CLIPConfig's check)
            raise ValueError(f"cannot use 0 heads for the {tower} width {width}: the number of heads is not stored in "
                             f"the state dict; pass {tower}_heads= (a divisor of {width})")
    inferred = dict(
        embed_dim=state_dict["text_projection"].shape[1], **vision, vision_heads=vision_heads,
        vocab_size=vocab_size, context_length=state_dict["positional_embedding"].shape[0], text_width=text_width,
        text_layers=count("transformer.resblocks."), text_heads=text_heads,
    )
    if "logit_bias" in state_dict:  # a SigLIP model (open_clip's layout): the loaded value replaces this start value
        inferred["init_logit_bias"] = float(state_dict["logit_bias"])
    clash = sorted(set(overrides) & set(inferred))
    if clash:
        raise ValueError(f"{clash} are read from the state dict's shapes and cannot be overridden")
    return CLIPConfig(**{"activation": "quick_gelu", **inferred, **overrides})


def load_openai_checkpoint(path, vision_heads: int | None = None, text_heads: int | None = None,
                           **overrides) -> CLIP:
    """Load OpenAI's released CLIP weights (a TorchScript archive such as ``ViT-B-32.pt``) or a file holding an
    OpenAI-format state dict (``torch.save(state_dict, path)``) into a float32 :class:`CLIP` in eval mode.

    Arguments after ``path`` are those of :meth:`CLIP.from_openai_state_dict`. Nothing is downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the download or copy did not finish; fetch the file again")
    try:  # OpenAI released TorchScript archives: the weights are the scripted module's state dict
        with warnings.catch_warnings():  # recent torch deprecates TorchScript; OpenAI's files still are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not TorchScript: a plain saved state dict (tensors only, so weights_only is safe)
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated zip, pickle errors, code in the pickle: none of it is loadable
            lines = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
            raise ValueError(f"{path} is neither a TorchScript archive (OpenAI's releases) nor a saved state dict "
                             f"of tensors: truncated, damaged or another kind of file ({reason})") from None
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict (a mapping of names to "
                         "tensors)")
    return CLIP.from_openai_state_dict(state_dict, vision_heads, text_heads, **overrides)
