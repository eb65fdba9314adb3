"""OpenAI's ResNet image tower (RN50, RN101, RN50x4, ...): the one their ResNet checkpoints hold, written batch-first.

    images (B, 3, S, S) ─ stem: three 3x3 convolutions (the first with stride 2), then a 2x2 average pool ─> S / 4
                        ─ layer1 .. layer4: bottleneck blocks; layers 2-4 halve the size ─> (B, 32 * width, S/32, S/32)
                        ─ attention pooling: the mean of the grid asks every cell once ─> (B, embed_dim)

It is He et al.'s (2016) ResNet-50 with the three changes CLIP's paper lists (Radford et al., 2021, section 2.4):

* the stem is three 3x3 convolutions and an average pool instead of one 7x7 convolution and a max pool;
* anti-aliased downsampling (Zhang, 2019, "Making Convolutional Networks Shift-Invariant Again"): a block that halves
  the resolution does it with a 2x2 average pool after its 3x3 convolution, not with a strided convolution, so that
  the dropped pixels are averaged in rather than skipped (which aliases); its shortcut pools the same way;
* global average pooling is replaced by **attention pooling**: one multi-head attention step whose single query is the
  average of the feature map (plus a position), and whose keys and values are every cell of the map (plus their
  positions). The output projection ``c_proj`` maps straight into the joint embedding space.

A bottleneck block is ``1x1 (reduce to `channels`) -> 3x3 -> [pool] -> 1x1 (expand to 4 * channels)``, each with batch
norm, added to the shortcut, then a ReLU. Stage ``i`` has ``width * 2**i`` channels inside its blocks and four times
that between them, so the last stage gives ``32 * width`` channels (2048 for RN50's width 64), the attention pool's
width. Its heads are ``32 * width // 64`` in OpenAI's models.

Parameter names are OpenAI's (``conv1``, ``bn1``, ..., ``layer1.0.downsample.0``, ``attnpool.q_proj``), so their
``visual.*`` weights load key for key. Batch norm is a training-time layer: load the weights, call ``.eval()``.

Reference: openai/CLIP ``clip/model.py`` (``Bottleneck``, ``AttentionPool2d``, ``ModifiedResNet``), whose results the
tests match on random weights of RN50's shapes.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

if __package__:  # inside a package (minclip, or a folder the model files were copied into)
    from .vision import check_images
else:  # copied as loose files side by side
    from vision import check_images

EXPANSION = 4  # a bottleneck block's output has 4x the channels of its 3x3 convolution
DOWNSAMPLING = 32  # stem (4x) and three halving stages (8x): the grid the attention pool sees is image_size / 32


class Bottleneck(nn.Module):
    """``relu(bn3(conv3(pool(relu(bn2(conv2(relu(bn1(conv1(x))))))))) + shortcut(x))``: ``(B, C_in, H, W)`` ->
    ``(B, 4 * channels, H / stride, W / stride)``; every convolution has stride 1, the pool does the downsampling."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)  # reduce
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()  # anti-aliased downsampling
        self.conv3 = nn.Conv2d(channels, channels * EXPANSION, 1, bias=False)  # expand
        self.bn3 = nn.BatchNorm2d(channels * EXPANSION)
        self.downsample = None  # the shortcut is the identity when the shapes already match
        if stride > 1 or in_channels != channels * EXPANSION:
            # pool, then a 1x1 convolution and batch norm; "0" and "1" are the names in OpenAI's checkpoints
            self.downsample = nn.Sequential(OrderedDict([
                ("pool", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(in_channels, channels * EXPANSION, 1, bias=False)),
                ("1", nn.BatchNorm2d(channels * EXPANSION)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, channels, H, W)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))  # (B, 4 * channels, H / stride, W / stride)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class AttentionPool2d(nn.Module):
    """Pool a feature map ``(B, C, H, W)`` into one vector ``(B, output_dim)`` with one attention query.

    The ``H * W`` cells become tokens; their mean is prepended as token 0, positions are added to all ``1 + H * W``
    tokens, and token 0 alone is the query: it attends over every token (itself included) with ``heads`` heads, and
    ``c_proj`` maps the result. Compared with average pooling, the weights of the average are learned per image.
    """

    def __init__(self, grid_size: int, width: int, heads: int, output_dim: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"heads={heads} must divide the attention pool's width {width}")
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(grid_size**2 + 1, width) / width**0.5)  # mean + cells
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        head_dim = C // self.heads
        tokens = x.flatten(2).transpose(1, 2)  # (B, C, H*W) -> (B, H*W, C): one token per cell
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (B, 1 + H*W, C): the mean first
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        q = self.q_proj(tokens[:, :1]).view(B, 1, self.heads, head_dim).transpose(1, 2)  # (B, heads, 1, hd)
        k = self.k_proj(tokens).view(B, -1, self.heads, head_dim).transpose(1, 2)  # (B, heads, 1 + H*W, hd)
        v = self.v_proj(tokens).view(B, -1, self.heads, head_dim).transpose(1, 2)  # (B, heads, 1 + H*W, hd)
        weights = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)  # (B, heads, 1, 1 + H*W)
        pooled = (weights @ v).transpose(1, 2).reshape(B, C)  # (B, heads, 1, hd) -> (B, 1, heads, hd) -> (B, C)
        return self.c_proj(pooled)  # (B, output_dim)


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet image encoder: ``(B, 3, image_size, image_size)`` -> ``(B, embed_dim)``.

    Args:
        image_size: side of the square input images, a multiple of 32 (224 for RN50).
        width: channels after the stem and inside layer1's blocks (64 for RN50); layer4 gives ``32 * width``.
        layers: bottleneck blocks in each of the four stages, e.g. ``(3, 4, 6, 3)`` for RN50.
        heads: heads of the attention pool (OpenAI: ``32 * width // 64``).
        embed_dim: size of the joint image-text space.

    Example:
        >>> tower = ModifiedResNet(image_size=64, width=8, layers=(1, 1, 1, 1), heads=4, embed_dim=16).eval()
        >>> tower(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 16])
    """

    def __init__(self, image_size: int, width: int, layers: tuple[int, ...], heads: int, embed_dim: int):
        super().__init__()
        if len(layers) != 4 or image_size % DOWNSAMPLING or width % 2:
            raise ValueError(f"OpenAI's ResNet has 4 stages, an image_size divisible by {DOWNSAMPLING} and an even "
                             f"width; got layers={tuple(layers)}, image_size={image_size}, width={width}")
        self.image_size = image_size
        # the stem: three 3x3 convolutions (width / 2, width / 2, width channels), the first with stride 2
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        in_channels = width
        for stage, blocks in enumerate(layers):  # self.layer1 .. self.layer4
            channels = width * 2**stage
            stage_blocks = [Bottleneck(in_channels, channels, stride=1 if stage == 0 else 2)]
            stage_blocks += [Bottleneck(channels * EXPANSION, channels) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*stage_blocks))
            in_channels = channels * EXPANSION
        self.attnpool = AttentionPool2d(image_size // DOWNSAMPLING, in_channels, heads, embed_dim)

    def init_openai_(self) -> None:
        """OpenAI's initialisation: the attention pool's projections ``N(0, width^-0.5)``, and the last batch norm of
        every block at zero, so each block starts as its shortcut (Goyal et al., 2017)."""
        std = self.attnpool.c_proj.in_features**-0.5
        for projection in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(projection.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.image_size)
        x = images.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, width / 2, S / 2, S / 2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))  # (B, width, S / 2, S / 2)
        x = self.avgpool(x)  # (B, width, S / 4, S / 4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 32 * width, S / 32, S / 32)
        return self.attnpool(x)  # (B, embed_dim)
