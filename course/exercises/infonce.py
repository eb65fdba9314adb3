"""Exercise: CLIP's contrastive loss (lesson 05, notebooks/05_contrastive_loss.ipynb).

A batch holds ``B`` matching (image, caption) pairs. CLIP scores every image against every caption with a scaled
cosine similarity, and asks each row and each column of that ``(B, B)`` matrix to pick its diagonal entry: InfoNCE,
the symmetric cross-entropy. No labels are needed beyond "pair i belongs together".

Grade your work with ``python -m course check infonce``. The references are ``minclip/model.py`` (``CLIP.forward``)
and ``minclip/loss.py`` (``clip_loss``).

Two conventions, both those of the reference code:

* the model stores its temperature in **log space** (``model.logit_scale = log(1 / 0.07)`` at initialisation), so
  :func:`clip_logits`, which mirrors ``CLIP.forward``, takes that parameter and exponentiates it;
* :func:`clip_loss` follows open_clip: its features arrive **already L2-normalised** and its ``logit_scale``
  **already exponentiated** (call it with ``model.logit_scale.exp()``).
"""

import torch
import torch.nn.functional as F


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled cosine similarity of every image with every text, as ``CLIP.forward`` returns it.

    Args:
        image_features: ``(N_images, E)``, raw outputs of ``encode_image`` (not normalised).
        text_features: ``(N_texts, E)``, raw outputs of ``encode_text`` (not normalised).
        logit_scale: 0-dim tensor, the model's parameter in log space.

    Returns:
        ``(logits_per_image, logits_per_text)``: ``(N_images, N_texts)`` with entry ``(i, j) = exp(logit_scale) *
        cos(image i, text j)``, and its transpose ``(N_texts, N_images)``.

    Hint: ``F.normalize(x, dim=-1)`` divides every row by its L2 norm; after it, a matrix product gives cosines.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("clip_logits: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """Symmetric InfoNCE over ``B`` matching pairs: a 0-dim tensor.

    Args:
        image_features: ``(B, D)``, L2-normalised rows; row ``i`` is the image of pair ``i``.
        text_features: ``(B, D)``, L2-normalised rows; row ``i`` is the caption of pair ``i``.
        logit_scale: ``s > 0``, already exponentiated: a Python float or a 0-dim tensor (which may need gradients:
            the temperature is learned).

    Returns:
        ``(CE(logits, labels) + CE(logits.T, labels)) / 2`` with ``logits = s * image_features @ text_features.T``
        and ``labels = [0, 1, ..., B - 1]``: row ``i`` is the question "which caption is image ``i``'s?", column
        ``j`` the question "which image is caption ``j``'s?".

    Things to expect: with random features and ``s = 1`` the loss is about ``ln(B)`` (a uniform guess); with a
    single pair it is exactly ``0``.

    Hint: ``F.cross_entropy(logits, labels)`` takes raw logits (it applies log-softmax itself) and averages over rows.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("clip_loss: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
