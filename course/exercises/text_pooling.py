"""Exercise: the text tower's causal mask and end-of-text pooling (lesson 03, notebooks/03_text_transformer.ipynb).

CLIP's text tower is a small GPT: every position attends only to itself and the positions before it (a causal
mask). So the first position that has read the whole caption is the end-of-text token (EOT), and its hidden state,
projected, becomes the caption's feature. Everything after the EOT (padding) cannot change it.

OpenAI's code finds the EOT with ``tokens.argmax(dim=-1)``, which works only because EOT is the largest id of their
vocabulary. We pool at the **first occurrence of an explicit** ``eot_token_id`` instead, so any vocabulary works.

Grade your work with ``python -m course check text_pooling``. The references are ``minclip/attention.py``
(``causal_mask``) and ``minclip/text.py`` (``first_eot_index``, ``TextTransformer.forward``).
"""

import torch


def causal_mask(length: int) -> torch.Tensor:
    """Additive float32 mask ``(length, length)``: ``0`` on and below the diagonal, ``-inf`` above it.

    Row ``i`` is query ``i``; it may attend to keys ``0 .. i`` only. Example::

        >>> causal_mask(3)
        tensor([[0., -inf, -inf],
                [0., 0., -inf],
                [0., 0., 0.]])

    Hint: ``torch.full((length, length), float("-inf"))`` and ``.triu(diagonal=1)`` (which keeps the entries above
    the diagonal and zeroes the rest).
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("causal_mask: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def first_eot_index(tokens: torch.Tensor, eot_token_id: int) -> torch.Tensor:
    """Position of the first ``eot_token_id`` in each row of ``tokens`` ``(B, T)``: a ``(B,)`` long tensor.

    A row without any EOT gets ``T`` (one past its last position). Example, with ``eot_token_id = 9``::

        tokens = [[5, 1, 2, 9, 0],        -> 3
                  [5, 9, 9, 0, 0],        -> 1   (the first of two)
                  [5, 1, 1, 1, 1]]        -> 5   (none)

    Hint: ``positions = torch.arange(T).expand_as(tokens)``; ``torch.where(tokens == eot_token_id, positions, T)``
    keeps the EOT positions and puts ``T`` elsewhere; the ``min`` of each row is the answer. No Python loop needed.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("first_eot_index: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def pool_text_features(hidden: torch.Tensor, tokens: torch.Tensor, eot_token_id: int,
                       text_projection: torch.Tensor) -> torch.Tensor:
    """The text feature: the hidden state at each text's first EOT, projected. ``(B, T, D)`` -> ``(B, E)``.

    Args:
        hidden: ``(B, T, D)``, the text Transformer's output after ``ln_final``.
        tokens: ``(B, T)``, the token ids (every row holds an EOT).
        eot_token_id: the end-of-text id.
        text_projection: ``(D, E)``, a bare matrix (no bias), used as ``x @ text_projection``.

    Hint: with ``positions = first_eot_index(tokens, eot_token_id)``, ``hidden[torch.arange(B), positions]`` picks
    one ``(D,)`` vector per row.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("pool_text_features: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
