"""CLIP's image towers: a Vision Transformer (what CLIP's best models use) and a small ResNet.

Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words")::

    images (B, 3, H, W) ─ conv1: cut into P x P patches, each mapped linearly to D channels ─> (B, N, D), N = HW/P^2
                        ─ prepend class_embedding ─> (B, 1 + N, D) ─ + positional_embedding ─ ln_pre
                        ─ Transformer (every patch sees every patch) ─ ln_post on the class token ─> (B, D)
                        ─ @ proj ─> (B, embed_dim)

Patchify. ``conv1`` is a convolution with kernel = stride = P and no bias: because the stride equals the kernel, the
windows tile the image without overlap, and each output pixel is a dot product between one flattened patch and one
filter, i.e. a linear layer applied to every patch. The forward pass uses ``conv1``, the form OpenAI's checkpoints store
(``visual.conv1.weight``, shape ``(D, 3, P, P)``); :func:`patchify` and :func:`patch_embed_unfold` spell out the same
computation as reshapes and one matrix product (tested equal to ``conv1``).

The class token is a learned vector that owns no patch; it attends to all patches and its final state, after
``ln_post``, is the image's feature. ``ln_pre`` (a LayerNorm before the blocks) is CLIP's addition to the original
ViT.

Small ResNet (He et al., 2016; the image encoder of the Korean CLIP review minclip grew from): a 3x3 stem, then stages
of basic residual blocks (two 3x3 convolutions with batch norm and a shortcut); each stage after the first halves the
resolution and doubles the channels; global average pooling, then a projection. OpenAI's ResNet encoders (RN50 and up)
differ: bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion), a three-convolution stem with average pooling, anti-aliased
downsampling (an average pool before each strided step instead of a strided convolution), and attention pooling (a
single multi-head attention whose query is the mean of the feature map) instead of the global average pool. That network
is ``minclip/modified_resnet.py`` (``CLIPConfig.image_encoder="modified_resnet"``), which OpenAI's ResNet checkpoints
load into.
"""

import torch
import torch.nn.functional as F
from torch import nn

if __package__:  # inside a package (minclip, or a folder the model files were copied into)
    from .transformer import Transformer
else:  # copied as loose files side by side
    from transformer import Transformer


def check_images(images, image_size: int) -> None:
    """Raise a clear ``TypeError``/``ValueError`` unless ``images`` is a float ``(B, 3, image_size, image_size)``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a float tensor (B, 3, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point (normalised pixels, (B, 3, H, W)), got dtype {images.dtype}; "
                        "convert uint8 (H, W, 3) pictures with minclip.data.to_model_input")
    shape = tuple(images.shape)
    if images.dim() != 4 or shape[1] != 3:
        hint = "; channels-last input? use images.permute(0, 3, 1, 2)" if images.dim() == 4 and shape[3] == 3 else ""
        hint = hint or ("; for a single image use images[None]" if images.dim() == 3 else "")
        raise ValueError(f"images must be (B, 3, H, W) with 3 colour channels, got {shape}{hint}")
    if shape[2] != image_size or shape[3] != image_size:
        raise ValueError(f"images must be {image_size}x{image_size} (the configured image_size), got {shape}; "
                         "resize them first")


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut ``(B, C, H, W)`` images into non-overlapping patches: ``(B, N, C * P * P)``, ``N = (H / P) * (W / P)``.

    Patches are listed row by row (left to right, top to bottom); inside a patch the values are ordered channel,
    then row, then column, the order in which ``conv1.weight`` ``(D, C, P, P)`` flattens, so that
    ``patchify(x, P) @ conv1.weight.flatten(1).T`` is the convolution.

    >>> x = torch.arange(16.0).view(1, 1, 4, 4)         # one 4x4 single-channel image
    >>> patchify(x, 2)                                   # four 2x2 patches
    tensor([[[ 0.,  1.,  4.,  5.],
             [ 2.,  3.,  6.,  7.],
             [ 8.,  9., 12., 13.],
             [10., 11., 14., 15.]]])
    """
    B, C, H, W = images.shape
    P = patch_size
    x = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, rows, P, cols, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C*P*P)


def patch_embed_unfold(images: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
    """The ViT patch embedding as "flatten each patch, then a linear layer", with ``conv1``'s weight ``(D, C, P, P)``.

    Returns ``(B, N, D)``, equal to ``conv1(images).flatten(2).transpose(1, 2)``.
    """
    patch_size = conv_weight.shape[-1]
    return patchify(images, patch_size) @ conv_weight.flatten(1).T  # (B, N, C*P*P) @ (C*P*P, D) -> (B, N, D)


class VisionTransformer(nn.Module):
    """CLIP's ViT image encoder: ``(B, 3, image_size, image_size)`` -> ``(B, embed_dim)``; see the module docstring.

    Parameter names (``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``, ``transformer``,
    ``ln_post``, ``proj``) are those under ``visual.`` in OpenAI's checkpoints.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        embed_dim: int,
        activation: str = "quick_gelu",
        attn_impl: str = "manual",
    ):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid_size**2 + 1, width))  # class token + patches
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, activation, attn_impl)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))
        self.init_openai_()

    def init_openai_(self) -> None:
        """OpenAI's initialisation: class token, positions and projection ``N(0, width^-0.5)``; ``conv1`` keeps
        PyTorch's default. OpenAI leaves the ViT's blocks at PyTorch's defaults too; we give them the same scaled
        init as the text tower's (:meth:`Transformer.init_openai_`), whose depth scaling suits both towers."""
        std = self.transformer.width**-0.5
        nn.init.normal_(self.class_embedding, std=std)
        nn.init.normal_(self.positional_embedding, std=std)
        nn.init.normal_(self.proj, std=std)
        self.transformer.init_openai_()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The Transformer's input: ``(B, 3, H, W)`` images -> ``(B, 1 + N, D)`` tokens, the class token first."""
        x = self.conv1(images.to(self.conv1.weight.dtype))  # (B, D, rows, cols): one D-vector per patch
        x = x.flatten(2).transpose(1, 2)  # (B, D, N) -> (B, N, D): one token per patch, row by row
        cls = self.class_embedding.expand(len(x), 1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding  # (B, 1 + N, D)
        return self.ln_pre(x)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """``(B, 3, H, W)`` float images -> ``(B, embed_dim)`` features (``(features, maps)`` with
        ``return_attention``, ``maps`` one ``(B, H, 1 + N, 1 + N)`` tensor per layer; index 0 is the class token)."""
        check_images(images, self.image_size)
        out = self.transformer(self.embed(images), return_attention=return_attention)  # no mask: all see all
        x, maps = out if return_attention else (out, None)  # x: (B, 1 + N, D)
        features = self.ln_post(x[:, 0]) @ self.proj  # the class token: (B, D) @ (D, embed_dim) -> (B, embed_dim)
        return (features, maps) if return_attention else features


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``stride=2`` halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:  # match the shape of the residual branch with a 1x1 conv
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        nn.init.zeros_(self.bn2.weight)  # each block starts as (almost) the identity, as OpenAI and Goyal et al. do

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """A small ResNet image encoder: ``(B, 3, image_size, image_size)`` -> ``(B, embed_dim)``.

    Args:
        image_size: side of the square input images.
        width: channels of the first stage; stage ``i`` has ``width * 2**i``.
        layers: basic blocks per stage, e.g. ``(1, 1, 1, 1)``; every stage after the first halves the resolution.
        embed_dim: size of the joint image-text space.
    """

    def __init__(self, image_size: int, width: int, layers: tuple[int, ...], embed_dim: int):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)  # stride 1: our images are small
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for i, blocks in enumerate(layers):
            out_channels = width * 2**i
            stage = [BasicBlock(channels, out_channels, stride=1 if i == 0 else 2)]
            stage += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Parameter(torch.randn(channels, embed_dim) * channels**-0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.image_size)
        x = F.relu(self.bn1(self.conv1(images.to(self.conv1.weight.dtype))))  # (B, width, H, W)
        x = self.stages(x)  # (B, C, H / 2^(stages-1), W / 2^(stages-1))
        x = x.mean(dim=(2, 3))  # global average pool: (B, C)
        return x @ self.proj  # (B, C) @ (C, embed_dim) -> (B, embed_dim)
