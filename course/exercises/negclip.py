"""Exercise: hard negative captions, NegCLIP's remedy for binding (lesson 09, notebooks/09_inside_clip.ipynb).

A CLIP trained on random batches can score "a red circle above a blue square" and "a blue square above a red circle"
alike: the loss only asks a caption to beat the *other captions of its batch*, and those seldom use the same words
in other places. NegCLIP (Yuksekgonul et al., 2023) adds, for the captions of the batch, *foils* that do: the same
words, swapped. Each foil is one more wrong caption for every image.

Grade your work with ``python -m course check negclip``. The references are ``minclip/foils.py``
(``batch_foils``) and ``minclip/loss.py`` (``clip_loss`` with ``foil_features``).
"""

import torch
import torch.nn.functional as F


def usable_foils(captions: list[str], foils: list) -> list[int]:
    """The rows of a batch whose foil the loss may use.

    Args:
        captions: the batch's true captions; ``captions[r]`` is row ``r``'s.
        foils: one foil per row, or ``None`` where a row has none.

    Returns:
        The rows ``r`` (in increasing order) whose ``foils[r]`` is not None, is not a true caption of the batch, and
        does not repeat the foil of an earlier row. Compare captions as the sampler does: ignoring case and runs of
        spaces (``" ".join(text.casefold().split())``).

    Why: a foil equal to row ``j``'s true caption would tell image ``j`` that its own caption is wrong; a repeated
    foil would count one wrong caption twice.

    Worked example::

        usable_foils(["a red circle", "a blue square", "a red square"],
                     ["a blue circle", "A red  square", None])   ->   [0]
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("usable_foils: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def negclip_loss(image_features: torch.Tensor, text_features: torch.Tensor, foil_features: torch.Tensor,
                 logit_scale) -> torch.Tensor:
    """InfoNCE with hard negatives: a 0-dim tensor.

    Args:
        image_features: ``(B, D)``, L2-normalised rows; row ``i`` is the image of pair ``i``.
        text_features: ``(B, D)``, L2-normalised rows; row ``i`` is the caption of pair ``i``.
        foil_features: ``(F, D)``, L2-normalised foils (``F`` may differ from ``B``, and may be 0).
        logit_scale: ``s > 0``, already exponentiated: a float or a 0-dim tensor.

    Returns:
        The mean of two cross-entropies, both with ``labels = [0, 1, ..., B - 1]``:

        * image -> text: row ``i`` of ``s * image_features @ candidates.T`` with ``candidates`` the ``B`` captions
          followed by the ``F`` foils, ``(B, B + F)``: every image must pick its caption among captions *and* foils;
        * text -> image: column ``j`` of ``s * image_features @ text_features.T``, as in plain InfoNCE: a foil is not a
          query, since no image of the batch is its answer.

    With ``F = 0`` this is exactly CLIP's loss. Hint: ``torch.cat`` puts the foils under the captions.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("negclip_loss: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
