"""The Transformer both CLIP towers share: pre-LayerNorm residual blocks, stacked.

One block (the GPT-2 / CLIP "pre-LN" arrangement)::

    x = x + attn(ln_1(x))       # tokens exchange information
    x = x + mlp(ln_2(x))        # each token is transformed on its own: Linear(D, 4D) -> activation -> Linear(4D, D)

Normalising *before* each sub-layer keeps an un-normalised residual path from input to output, which is what lets deep
stacks train without a learning-rate warm-up trick per layer (Xiong et al., 2020, "On Layer Normalization in the
Transformer Architecture"). Module names (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``, ``resblocks``)
are those of OpenAI's CLIP checkpoints, so their weights load key for key.

The activation is GELU or OpenAI's QuickGELU, ``x * sigmoid(1.702 x)``: a cheaper approximation of GELU that CLIP
was trained with. Loading OpenAI's weights needs QuickGELU; training from scratch works with either.

References: Radford et al. (2019), GPT-2; Radford et al. (2021), CLIP, section 2.4.
"""

import torch
from torch import nn

if __package__:  # inside a package (minclip, or a folder the model files were copied into)
    from .attention import MultiheadSelfAttention
else:  # copied as loose files side by side
    from attention import MultiheadSelfAttention

ACTIVATIONS = ("quick_gelu", "gelu")


QUICK_GELU_SLOPE = 1.702  # QuickGELU's sigmoid slope: sigmoid(1.702 x) is close to the normal CDF of x


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 * x)``, the GELU approximation OpenAI's CLIP uses (within ~0.02 of exact GELU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(QUICK_GELU_SLOPE * x)


def make_activation(name: str) -> nn.Module:
    """``"quick_gelu"`` -> :class:`QuickGELU`, ``"gelu"`` -> ``nn.GELU()`` (exact, erf-based)."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class MLP(nn.Module):
    """Position-wise feed-forward network ``c_proj(gelu(c_fc(x)))`` with hidden width ``4 * width``: ``(B, T, D)``.

    Each token is transformed on its own; the 4x wider hidden layer is where most of a block's parameters live.
    """

    def __init__(self, width: int, activation: str = "quick_gelu"):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = make_activation(activation)  # named as in OpenAI's checkpoints (holds no weights)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))  # (B, T, D) -> (B, T, 4D) -> (B, T, D)


class ResidualAttentionBlock(nn.Module):
    """One pre-LN Transformer block over ``(B, T, D)`` tokens; see the module docstring."""

    def __init__(self, width: int, heads: int, activation: str = "quick_gelu", attn_impl: str = "manual"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads, impl=attn_impl)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, activation)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(x, weights)``: ``x`` is ``(B, T, D)``, ``weights`` the ``(B, H, T, T)`` attention or ``None``.

        The mask arguments are those of :meth:`MultiheadSelfAttention.forward`.
        """
        attended, weights = self.attn(
            self.ln_1(x), attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
            need_weights=need_weights,
        )
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class Transformer(nn.Module):
    """A stack of ``layers`` residual blocks of the same ``width``, in ``self.resblocks``.

    Example:
        >>> stack = Transformer(width=32, layers=2, heads=4)
        >>> x = torch.randn(2, 5, 32)                                  # (B, T, D)
        >>> y, maps = stack(x, is_causal=True, return_attention=True)
        >>> y.shape, len(maps), maps[0].shape                          # one (B, H, T, T) map per layer
        (torch.Size([2, 5, 32]), 2, torch.Size([2, 4, 5, 5]))
    """

    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu", attn_impl: str = "manual"):
        super().__init__()
        self.width, self.layers, self.heads = width, layers, heads
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, activation, attn_impl) for _ in range(layers)]
        )

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        return_attention: bool = False,
    ):
        """Run every block in order. ``(B, T, D) -> (B, T, D)``.

        With ``return_attention=True`` returns ``(x, maps)`` where ``maps`` is a list with one ``(B, H, T, T)``
        tensor of attention weights per layer (computed by the hand-written path, whatever ``attn_impl`` is).
        """
        maps = []
        for block in self.resblocks:
            x, weights = block(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
                               need_weights=return_attention)
            maps.append(weights)
        return (x, maps) if return_attention else x

    def init_openai_(self) -> None:
        """OpenAI's initialisation for the blocks (GPT-2 style), applied in place.

        With width ``D`` and ``L`` layers: ``in_proj_weight ~ N(0, D^-0.5)``; the two projections that write into
        the residual stream, ``attn.out_proj`` and ``mlp.c_proj``, ``~ N(0, D^-0.5 (2L)^-0.5)``, so that the sum of
        the ``2L`` residual updates keeps a variance that does not grow with depth; ``mlp.c_fc ~ N(0, (2D)^-0.5)``.
        Biases start at zero and LayerNorms at the identity (OpenAI leaves the MLP biases at PyTorch's default
        uniform; zero is the common choice and makes every block start close to the identity map).
        """
        attn_std = self.width**-0.5
        proj_std = self.width**-0.5 * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            for bias in (block.attn.in_proj_bias, block.attn.out_proj.bias, block.mlp.c_fc.bias, block.mlp.c_proj.bias):
                nn.init.zeros_(bias)
            for norm in (block.ln_1, block.ln_2):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
