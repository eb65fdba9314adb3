"""Exercise: multi-head self-attention by hand (lesson 01, notebooks/01_attention.ipynb).

You write the four pieces of the attention inside every CLIP block: the scaled dot product with masks, splitting the
width into heads, merging them back, and the whole multi-head layer with the weight layout of OpenAI's checkpoints.

Grade your work with ``python -m course check attention`` (from the repository root). The reference is
``minclip/attention.py``: read it after you pass, not before. Use plain torch operations; calling
``F.scaled_dot_product_attention`` or ``nn.MultiheadAttention`` would pass the checks and teach you nothing.

Shapes: ``B`` batch, ``T`` tokens, ``D`` width, ``H`` heads, ``d = D // H`` channels per head.
"""

import math

import torch


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q @ k^T / sqrt(d) + mask) @ v``, for every batch row and head at once.

    Args:
        q: ``(B, H, Tq, d)`` queries.
        k: ``(B, H, Tk, d)`` keys. ``Tk`` may differ from ``Tq``.
        v: ``(B, H, Tk, d)`` values.
        mask: ``None`` or an additive float mask broadcastable to ``(B, H, Tq, Tk)``: ``0`` where a query may look at
            a key, ``-inf`` where it may not (e.g. ``(Tq, Tk)`` for a causal mask, ``(B, 1, 1, Tk)`` for padding).

    Returns:
        ``(out, weights)``: ``out`` is ``(B, H, Tq, d)``, ``weights`` the attention probabilities ``(B, H, Tq, Tk)``.
        Each row of ``weights`` sums to 1, except a row whose keys are *all* blocked: it must be all zeros (and so
        its ``out`` row), never NaN.

    Hints:
        * ``k.transpose(-2, -1)`` swaps the last two dims only; ``@`` batches over the leading dims.
        * Why ``sqrt(d)``: the dot product of two random ``d``-vectors has variance ``d``; dividing keeps the scores
          near variance 1, so the softmax does not collapse onto one key at initialisation.
        * ``torch.softmax(scores, dim=-1)``: every query distributes its attention over the keys.
        * A row of ``-inf`` scores gives ``softmax = 0 / 0 = NaN``. Find those rows
          (``torch.isneginf(mask).all(dim=-1, keepdim=True)``), replace their scores by anything finite, and zero
          their weights afterwards with ``masked_fill``.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    # 1. scores (B, H, Tq, Tk) = q @ k^T / sqrt(d)
    # 2. if there is a mask: add it, and remember which rows are blocked entirely
    # 3. weights = softmax over the keys; zero the fully blocked rows
    # 4. out = weights @ v; return out, weights
    raise NotImplementedError("scaled_dot_product_attention: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Split the width into heads: ``(B, T, D) -> (B, H, T, d)`` with ``d = D // H``.

    Head ``h`` owns channels ``h * d`` to ``(h + 1) * d - 1`` of every token, so that
    ``split_heads(x, H)[b, h, t] == x[b, t, h * d : (h + 1) * d]``.

    Hint: ``x.view(B, T, H, d)`` keeps every token's channels together; then move the head dim in front of the
    token dim with ``.transpose(1, 2)``. (``x.view(B, H, T, d)`` has the right shape and the wrong contents.)
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("split_heads: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Undo :func:`split_heads`: ``(B, H, T, d) -> (B, T, H * d)``.

    Hint: transpose back to ``(B, T, H, d)``, then ``.reshape(B, T, H * d)``. A transposed tensor is not contiguous
    in memory, so ``.view`` refuses it; ``.reshape`` copies when it has to.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("merge_heads: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def multi_head_self_attention(x: torch.Tensor, in_proj_weight: torch.Tensor, in_proj_bias: torch.Tensor,
                              out_proj_weight: torch.Tensor, out_proj_bias: torch.Tensor, heads: int,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head self-attention over ``x`` ``(B, T, D)``, returning ``(B, T, D)``.

    The weights have the layout of ``nn.MultiheadAttention`` and of OpenAI's CLIP checkpoints
    (``attn.in_proj_weight`` and so on):

    * ``in_proj_weight`` ``(3D, D)`` and ``in_proj_bias`` ``(3D,)``: the query, key and value projections stacked
      in that order, so ``x @ in_proj_weight.T + in_proj_bias`` is ``(B, T, 3D)`` = ``[q | k | v]``;
    * ``out_proj_weight`` ``(D, D)`` and ``out_proj_bias`` ``(D,)``: applied after the heads are merged.

    ``mask`` is ``None`` or an additive float mask broadcastable to ``(B, H, T, T)``, passed to your
    :func:`scaled_dot_product_attention`.

    Hint: project, cut the ``3D`` channels into q, k, v (``.chunk(3, dim=-1)``), :func:`split_heads` each, attend,
    :func:`merge_heads`, project out. Six lines.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("multi_head_self_attention: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
