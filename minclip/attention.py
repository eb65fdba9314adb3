"""Multi-head self-attention, written out by hand.

This is the one operation that lets every token (a word piece in the text tower, an image patch in the vision tower)
look at every other token. For an input ``x`` of shape ``(B, T, D)``:

1. project every token to a query, a key and a value: ``q, k, v = x @ W_q.T, x @ W_k.T, x @ W_v.T``;
2. split ``D`` into ``H`` heads of ``D // H`` channels, so each head attends on its own;
3. score every (query, key) pair with a scaled dot product ``q @ k.T / sqrt(D // H)``, add the mask, softmax over keys;
4. mix the values with those weights, merge the heads back to ``D`` channels and apply the output projection.

References: Vaswani et al., "Attention Is All You Need" (2017), section 3.2; the parameter layout is PyTorch's
``nn.MultiheadAttention`` (one stacked ``in_proj_weight`` for q, k and v, then ``out_proj``), which is also the layout
of OpenAI's CLIP checkpoints, so their weights load into this module key for key.

Masks. Two kinds, which can be combined:

* ``attn_mask`` says which query may look at which key, shape ``(T, T)``, ``(B, T, T)`` or ``(B, H, T, T)``.
  A float mask is **added** to the scores (``0`` = allowed, ``-inf`` = blocked, anything between = a soft bias).
  A boolean mask uses **True = blocked** (the convention of ``nn.MultiheadAttention``). Beware:
  ``F.scaled_dot_product_attention`` uses the opposite convention (True = allowed); the ``"sdpa"`` path converts.
* ``key_padding_mask`` says which keys are padding, shape ``(B, T)``: boolean with True = padding (blocked),
  or float, added to the scores like ``attn_mask``.

A query whose keys are all blocked has nothing to attend to. A plain softmax over a row of ``-inf`` gives ``0 / 0 =
NaN``, which would poison the whole batch during training; here such a row gets all-zero attention weights instead,
so the heads contribute zeros and the module outputs just ``out_proj.bias`` for that token.

Two implementations give the same numbers (tested to 1e-6): ``impl="manual"``, the four steps above, readable, able
to return per-head attention maps; and ``impl="sdpa"``, PyTorch's fused ``F.scaled_dot_product_attention``, which
never stores the ``(T, T)`` weights and has fast kernels on GPUs (asking it for the weights falls back to the manual
path). minclip's ``docs/speed.md`` compares their speed on a CPU.

This file imports only torch and the standard library, so it can be copied alone into coursework.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

IMPLEMENTATIONS = ("manual", "sdpa")


def causal_mask(length: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Additive mask that stops every position from seeing the positions after it.

    Returns a ``(length, length)`` tensor with ``0`` on and below the diagonal and ``-inf`` above it: query ``i`` may
    attend to keys ``0..i`` only. This is the mask of GPT-style language models and of CLIP's text tower.

    >>> causal_mask(3)
    tensor([[0., -inf, -inf],
            [0., 0., -inf],
            [0., 0., 0.]])
    """
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(diagonal=1)  # True above the diagonal
    return torch.zeros(length, length, device=device, dtype=dtype).masked_fill(blocked, float("-inf"))


def to_additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean mask (True = blocked) into an additive float mask (-inf = blocked); float masks pass through.

    >>> to_additive_mask(torch.tensor([False, True]), torch.float32)
    tensor([0., -inf])
    """
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The core of attention, by hand: ``softmax(q @ k.T / sqrt(d) + mask) @ v``, one head at a time.

    Args:
        q, k, v: ``(B, H, T, d)`` queries, keys and values (``d`` channels per head).
        mask: optional additive float mask broadcastable to ``(B, H, T, T)`` (``-inf`` = blocked).
        is_causal: also block the keys after each query (adds :func:`causal_mask`).

    Returns:
        ``(out, weights)``: ``out`` is ``(B, H, T, d)``, ``weights`` the attention probabilities ``(B, H, T, T)``
        (each row sums to 1, or is all zeros where every key of that query was blocked).

    Dividing by ``sqrt(d)`` keeps the scores' variance near 1 whatever the head size, so the softmax does not saturate
    into a one-hot at initialisation.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, d) @ (B, H, d, T) -> (B, H, T, T)
    can_block_whole_rows = mask is not None  # the causal mask alone always leaves query i its own key i
    if is_causal:
        causal = causal_mask(q.shape[-2], device=q.device, dtype=scores.dtype)  # (T, T)
        mask = causal if mask is None else mask + causal
    if mask is not None:
        scores = scores + mask
    if can_block_whole_rows:
        # Rows where every key is blocked: give them finite scores so softmax stays finite, then zero their weights.
        dead_rows = torch.isneginf(mask).all(dim=-1, keepdim=True)  # broadcastable to (B, H, T, 1)
        scores = scores.masked_fill(dead_rows, 0.0)
        weights = scores.softmax(dim=-1).masked_fill(dead_rows, 0.0)
    else:
        weights = scores.softmax(dim=-1)  # (B, H, T, T), softmax over the keys
    return weights @ v, weights  # (B, H, T, T) @ (B, H, T, d) -> (B, H, T, d)


class MultiheadSelfAttention(nn.Module):
    """Multi-head self-attention over batch-first tokens ``(B, T, D)``.

    Parameters carry ``nn.MultiheadAttention``'s names (``in_proj_weight`` ``(3D, D)`` stacking the query, key and
    value projections in that order, ``in_proj_bias`` ``(3D,)``, ``out_proj``), so its weights and OpenAI's CLIP
    weights copy over one to one.

    Args:
        width: model width ``D``.
        heads: number of heads ``H``; must divide ``width``.
        impl: ``"manual"`` (hand-written, see module docstring) or ``"sdpa"`` (``F.scaled_dot_product_attention``).

    Example:
        >>> attn = MultiheadSelfAttention(width=64, heads=4)
        >>> x = torch.randn(2, 10, 64)                           # (B, T, D)
        >>> out, weights = attn(x, attn_mask=causal_mask(10), need_weights=True)
        >>> out.shape, weights.shape
        (torch.Size([2, 10, 64]), torch.Size([2, 4, 10, 10]))
    """

    def __init__(self, width: int, heads: int, impl: str = "manual"):
        super().__init__()
        if width <= 0 or heads <= 0 or width % heads != 0:
            raise ValueError(f"width must be a positive multiple of heads, got width={width}, heads={heads}")
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
        self.width, self.heads, self.head_dim, self.impl = width, heads, width // heads, impl
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # rows: [W_q; W_k; W_v]
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's defaults for ``nn.MultiheadAttention``: Xavier-uniform projections, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        return f"width={self.width}, heads={self.heads}, impl={self.impl!r}"

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over the tokens of ``x``.

        Args:
            x: ``(B, T, D)`` floating tokens.
            attn_mask: ``(T, T)``, ``(B, T, T)`` or ``(B, H, T, T)``; float (added) or bool (True = blocked).
            key_padding_mask: ``(B, T)``; bool (True = padding, blocked) or float (added).
            is_causal: also apply :func:`causal_mask` (lets the ``"sdpa"`` path use its fastest kernels).
            need_weights: also return the per-head attention weights.

        Returns:
            ``(out, weights)``: ``out`` is ``(B, T, D)``; ``weights`` is ``(B, H, T, T)`` if ``need_weights`` else
            ``None``. Unlike ``nn.MultiheadAttention``, the weights are per head, not averaged over heads.
        """
        mask = self._combined_mask(x, attn_mask, key_padding_mask)  # None, or additive float (B or 1, H or 1, T, T)
        B, T, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3D): q, k and v in one matrix product
        qkv = qkv.view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # three of (B, H, T, d)
        return self._attend(q, k, v, mask, is_causal, need_weights)

    def _attend(self, q, k, v, mask, is_causal: bool, need_weights: bool):
        """``(B, H, T, d)`` queries, keys and values by the configured path, heads merged, output projection:
        ``(B, T, D)``, and the weights ``(B, H, T, T)`` if ``need_weights`` else ``None``."""
        if self.impl == "manual" or need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask, is_causal)
        else:
            out, weights = self._sdpa(q, k, v, mask, is_causal), None
        B, H, T, d = out.shape
        out = out.transpose(1, 2).reshape(B, T, H * d)  # (B, H, T, d) -> (B, T, H, d) -> (B, T, D): heads merged
        return self.out_proj(out), (weights if need_weights else None)

    @staticmethod
    def _sdpa(q, k, v, mask, is_causal: bool) -> torch.Tensor:
        if mask is None:  # the fused kernel builds the causal mask itself, or needs none
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        if is_causal:
            mask = mask + causal_mask(q.shape[-2], device=q.device, dtype=mask.dtype)
        dead_rows = torch.isneginf(mask).all(dim=-1, keepdim=True)  # queries with nothing to attend to
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.masked_fill(dead_rows, 0.0))
        return out.masked_fill(dead_rows, 0.0)

    def _combined_mask(self, x, attn_mask, key_padding_mask) -> torch.Tensor | None:
        """Check the inputs and fold the given masks into one additive float mask broadcastable to (B, H, T, T).

        The causal mask is left out: each path adds it its own cheapest way (see ``is_causal`` of the core)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.width:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be (B, T, D) with D = width = {self.width}, got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        B, T, _ = x.shape
        mask = None
        if attn_mask is not None:
            _check_mask_dtype("attn_mask", attn_mask)
            allowed = [(T, T), (B, T, T), (B, 1, T, T), (B, self.heads, T, T)]
            if tuple(attn_mask.shape) not in allowed:
                raise ValueError(
                    f"attn_mask must have shape (T, T), (B, T, T) or (B, H, T, T) = one of {allowed}, "
                    f"got {tuple(attn_mask.shape)}"
                )
            mask = to_additive_mask(attn_mask, x.dtype)
            if mask.dim() == 3:
                mask = mask.unsqueeze(1)  # (B, T, T) -> (B, 1, T, T): the same mask for every head
        if key_padding_mask is not None:
            _check_mask_dtype("key_padding_mask", key_padding_mask)
            if tuple(key_padding_mask.shape) != (B, T):
                raise ValueError(
                    f"key_padding_mask must be (B, T) = {(B, T)} with True marking padding, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            padding = to_additive_mask(key_padding_mask, x.dtype)[:, None, None, :]  # (B, 1, 1, T): per key
            mask = padding if mask is None else mask + padding
        return mask


def _check_mask_dtype(name: str, mask) -> None:
    if not isinstance(mask, torch.Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
        kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a bool tensor (True = blocked) or a float tensor (added to the scores), "
                        f"got {kind}")
