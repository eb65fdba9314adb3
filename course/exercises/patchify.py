"""Exercise: the Vision Transformer's input, from pixels to tokens (lesson 04, notebooks/04_vision_transformer.ipynb).

A ViT reads an image the way the text tower reads a caption: as a sequence of tokens. You cut the image into
``P x P`` patches, map each flattened patch linearly to ``D`` channels (what CLIP's ``conv1`` does, as a convolution
with kernel = stride = ``P``), put a learned class token in front, and add a learned position to every token.

Grade your work with ``python -m course check patchify``. The reference is ``minclip/vision.py``.
Use tensor operations (reshape, permute, matmul); no Python loops over pixels or patches.

Shapes: ``B`` images, ``C`` channels, ``H x W`` pixels, ``P`` patch side, ``N = (H / P) * (W / P)`` patches,
``D`` token width.
"""

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut ``(B, C, H, W)`` images into non-overlapping patches: ``(B, N, C * P * P)``.

    Order matters, because a checkpoint's ``conv1.weight`` ``(D, C, P, P)`` expects it:

    * patches are listed row by row: left to right along the top row of patches, then the next row down;
    * inside a patch, values are ordered by channel, then pixel row, then pixel column (``weight.flatten(1)``'s
      order).

    Example::

        >>> patchify(torch.arange(16.0).view(1, 1, 4, 4), 2)      # a 4x4 image, four 2x2 patches
        tensor([[[ 0.,  1.,  4.,  5.],
                 [ 2.,  3.,  6.,  7.],
                 [ 8.,  9., 12., 13.],
                 [10., 11., 14., 15.]]])

    Hint: view ``(B, C, H, W)`` as ``(B, C, H/P, P, W/P, P)`` (every pixel gets a patch row, a row inside the patch,
    a patch column and a column inside the patch), ``permute`` the dims to ``(B, H/P, W/P, C, P, P)``, then
    ``reshape`` to ``(B, N, C * P * P)``. H and W need not be equal.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("patchify: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def patch_embed(images: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
    """Embed every patch: ``(B, C, H, W)`` images and ``conv1``'s weight ``(D, C, P, P)`` -> ``(B, N, D)``.

    Equal to ``F.conv2d(images, conv_weight, stride=P).flatten(2).transpose(1, 2)``: because the stride equals the
    kernel, the convolution's windows are exactly the patches, and each output is one patch dotted with one filter.
    Write it as "patchify, then a linear layer" with your :func:`patchify` and a matrix product.

    Hint: ``P = conv_weight.shape[-1]``; ``conv_weight.flatten(1)`` is ``(D, C * P * P)``.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("patch_embed: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def vit_tokens(images: torch.Tensor, conv_weight: torch.Tensor, class_embedding: torch.Tensor,
               positional_embedding: torch.Tensor) -> torch.Tensor:
    """The token sequence a CLIP ViT feeds to its first LayerNorm (``ln_pre``): ``(B, 1 + N, D)``.

    Args:
        images: ``(B, C, H, W)``.
        conv_weight: ``(D, C, P, P)``, the weight of ``visual.conv1``.
        class_embedding: ``(D,)``, ``visual.class_embedding``: a learned token that owns no patch. It attends to all
            patches; its final state is the image's feature.
        positional_embedding: ``(1 + N, D)``, ``visual.positional_embedding``: row 0 for the class token, row
            ``1 + i`` for patch ``i``.

    Hint: :func:`patch_embed`, then ``class_embedding.expand(B, 1, D)`` concatenated in front along dim 1, then add
    ``positional_embedding`` (it broadcasts over the batch).
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("vit_tokens: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
