"""Training's two shortcuts: the same features as the plain towers, computed with less work.

The model files compute CLIP as a textbook writes it. With ``CLIPConfig(fast_path=True)`` (what training uses),
``CLIP`` builds the two towers of this file instead of the plain ones: subclasses with the same parameters under the
same names, whose forward pass gives the same features and gradients (tested, to float rounding) by two shortcuts:

1. **The last block computes only the token that is read.** CLIP reads one token per input at the top of each tower
   (the class token, the end-of-text token) and throws the other tokens' last-block outputs away. Every block but the
   last still runs for every token, since the blocks above attend to all of them; the last block still takes keys and
   values from every token, but its query, weighted sum, output projection and MLP run for the read token alone.
2. **QuickGELU as one fused SiLU.** ``x * sigmoid(a x) = silu(a x) / a`` with ``a = 1.702``, and a constant factor
   passes through a linear layer: with ``c_fc`` scaled by ``a`` and ``c_proj``'s weight by ``1 / a``, the widest
   tensor of a block, the ``(B, T, 4D)`` hidden layer, sees one fused SiLU pass forward and one backward instead of a
   product, a sigmoid and another product. The weights are rescaled on every call, so the parameters and their
   gradients stay OpenAI's; only the float rounding differs.

What they buy is measured by ``make bench`` (``docs/speed.md``). The plain towers stay the reference: a forward hook
on ``mlp.gelu`` fires only there, and ``return_attention=True`` always takes the plain path (every map is complete).

This file is needed only with ``fast_path=True``; the other model files work without it.
"""

import torch
import torch.nn.functional as F

if __package__:  # inside a package (minclip, or a folder the model files were copied into)
    from .attention import MultiheadSelfAttention, scaled_dot_product_attention
    from .text import TextTransformer
    from .transformer import MLP, QUICK_GELU_SLOPE, QuickGELU, Transformer
    from .vision import VisionTransformer, check_images
else:  # copied as loose files side by side
    from attention import MultiheadSelfAttention, scaled_dot_product_attention
    from text import TextTransformer
    from transformer import MLP, QUICK_GELU_SLOPE, QuickGELU, Transformer
    from vision import VisionTransformer, check_images


def mlp_fused(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)`` with QuickGELU as one fused SiLU (shortcut 2): ``(..., D) -> (..., D)``. Other activations run
    the plain module."""
    if not isinstance(mlp.gelu, QuickGELU):
        return mlp(x)
    a = QUICK_GELU_SLOPE
    hidden = F.linear(x, mlp.c_fc.weight * a, mlp.c_fc.bias * a)  # (..., 4D): a * c_fc(x)
    return F.linear(F.silu(hidden), mlp.c_proj.weight / a, mlp.c_proj.bias)  # (..., D): c_proj(silu(a h) / a)


def attention_at(attn: MultiheadSelfAttention, x: torch.Tensor, positions: torch.Tensor,
                 key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """``attn(x, ...)[0][arange(B), positions]``: the output at one position per row, keys and values from every token.

    Args:
        x: ``(B, T, D)`` tokens; positions: ``(B,)`` integer positions, the one query of each row.
        key_padding_mask: optional bool ``(B, T)``, True = padding; is_causal: block the keys after each query.

    Returns:
        ``(B, D)``.
    """
    B, T, D = x.shape
    H, d = attn.heads, attn.head_dim
    rows = torch.arange(B, device=x.device)
    w_q, w_kv = attn.in_proj_weight.split([D, 2 * D])  # (D, D) and (2D, D): the rows of W_q, then of W_k and W_v
    b_q, b_kv = attn.in_proj_bias.split([D, 2 * D])
    q = F.linear(x[rows, positions], w_q, b_q).view(B, H, 1, d)  # (B, D) -> (B, H, 1, d): one query per row
    kv = F.linear(x, w_kv, b_kv).view(B, T, 2, H, d)  # (B, T, 2, H, d)
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # two of (B, H, T, d)
    blocked = key_padding_mask  # (B, T) or None
    if is_causal:
        after = torch.arange(T, device=x.device) > positions[:, None]  # (B, T): the keys after each query
        blocked = after if blocked is None else blocked | after
    mask = None
    if blocked is not None:
        mask = torch.zeros(B, 1, 1, T, dtype=x.dtype, device=x.device).masked_fill(blocked[:, None, None, :],
                                                                                  float("-inf"))  # (B, 1, 1, T)
    out, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, 1, d)
    return attn.out_proj(out.reshape(B, D))  # (B, H, 1, d) -> (B, D): heads merged


def transformer_at(transformer: Transformer, x: torch.Tensor, positions: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """``transformer(x, ...)[arange(B), positions]`` with both shortcuts: ``(B, T, D)`` -> ``(B, D)``."""
    rows = torch.arange(len(x), device=x.device)
    if len(transformer.resblocks) == 0:
        return x[rows, positions]
    *below, last = transformer.resblocks
    for block in below:  # every token: the blocks above attend to all of them
        x = x + block.attn(block.ln_1(x), key_padding_mask=key_padding_mask, is_causal=is_causal)[0]
        x = x + mlp_fused(block.mlp, block.ln_2(x))
    read = x[rows, positions] + attention_at(last.attn, last.ln_1(x), positions, key_padding_mask, is_causal)  # (B, D)
    return read + mlp_fused(last.mlp, last.ln_2(read))


class FastVisionTransformer(VisionTransformer):
    """:class:`VisionTransformer` computed with both shortcuts: the same parameters, the same features."""

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        if return_attention:  # complete maps need every token of every block: the plain path
            return super().forward(images, return_attention=True)
        check_images(images, self.image_size)
        x = self.embed(images)  # (B, 1 + N, D)
        class_token = torch.zeros(len(x), dtype=torch.long, device=x.device)  # (B,): position 0 of every row
        return self.ln_post(transformer_at(self.transformer, x, class_token)) @ self.proj  # (B, embed_dim)


class FastTextTransformer(TextTransformer):
    """:class:`TextTransformer` computed with both shortcuts: the same parameters, the same features."""

    def forward(self, tokens: torch.Tensor, return_attention: bool = False):
        if return_attention:  # complete maps need every token of every block: the plain path
            return super().forward(tokens, return_attention=True)
        self.check_tokens(tokens)
        x = transformer_at(self.transformer, self.embed(tokens), self.pooled_positions(tokens),
                           **self.attention_masks(tokens))  # (B, D)
        return self.ln_final(x) @ self.text_projection  # (B, embed_dim)
