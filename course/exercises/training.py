"""Exercise: CLIP's training step (lesson 07, notebooks/07_training.ipynb).

Three pieces of the loop in ``minclip/train.py``, each a choice the CLIP paper made (section 2.5):

* the learning rate warms up linearly, then decays along a half cosine to zero;
* weight decay applies to weight matrices only, never to gains, biases, embeddings or the temperature;
* one step encodes a batch, computes the contrastive loss, clips the gradient norm, updates the weights, and clamps
  the learned temperature so that ``exp(logit_scale)`` never exceeds 100.

Grade your work with ``python -m course check training``. The reference is ``minclip/train.py`` (``warmup_cosine``,
``parameter_groups`` and the body of the loop in ``train``). You may import from minclip what earlier lessons built
(``from minclip.loss import clip_loss``), or your own versions.
"""

import math

import torch

from minclip.loss import clip_loss


def lr_multiplier(step: int, total_steps: int, warmup_steps: int) -> float:
    """The factor the peak learning rate is multiplied by at ``step`` (counted from 0).

    * Warm-up, ``step < warmup_steps``: ``(step + 1) / warmup_steps``, rising to 1 (the first step already moves).
    * Then a half cosine: with ``progress = (step - warmup_steps) / (total_steps - warmup_steps)``, capped at 1,
      the factor is ``0.5 * (1 + cos(pi * progress))``: 1 right after the warm-up, 0.5 half-way, 0 at the end (and
      after it).

    Why: large steps on a random model send it somewhere bad before the gradients mean anything (warm-up); small
    steps at the end let it settle into a minimum instead of bouncing around it (decay). Guard against
    ``total_steps == warmup_steps`` (divide by at least 1).
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("lr_multiplier: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: ``[{"params": decayed, "weight_decay": weight_decay},
    {"params": not_decayed, "weight_decay": 0.0}]``.

    Go through ``model.named_parameters()`` in order:

    * skip parameters with ``requires_grad == False`` (frozen: the optimiser must not see them);
    * **no decay** for parameters with fewer than 2 dims (LayerNorm gains and biases, linear biases, the 0-dim
      ``logit_scale``) and for every parameter whose name contains ``"embedding"`` (``token_embedding``,
      ``positional_embedding``, ``class_embedding``);
    * **decay** for everything else: the weight matrices.

    Why: decay pulls a weight toward zero, a prior that suits matrices (it keeps them from growing without need). A
    gain or bias is one number per channel, and pulling it to zero only biases the output; an embedding row gets a
    gradient only when its token occurs, so decay would shrink rare tokens most; and the temperature is not a weight
    at all.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("weight_decay_groups: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def training_step(model, images: torch.Tensor, tokens: torch.Tensor, optimizer, grad_clip: float) -> float:
    """One optimisation step of CLIP on a batch of ``B`` matching pairs; returns the loss as a Python float.

    Args:
        model: a ``minclip.CLIP`` (``encode_image``, ``encode_text``, ``logit_scale`` in log space).
        images: ``(B, 3, S, S)`` float model input. ``tokens``: ``(B, T)`` token ids; row ``i`` describes image ``i``.
        optimizer: already built over the model's parameters (``torch.optim.AdamW`` in minclip's loop; the grader
            passes SGD with momentum): use its ``zero_grad()`` and ``step()``.
        grad_clip: the largest gradient norm allowed; larger gradients are scaled down to it.

    Steps:

    1. features: ``model.encode_image(images, normalize=True)`` and ``model.encode_text(tokens, normalize=True)``;
    2. the loss: ``clip_loss(image_features, text_features, model.logit_scale.exp())``;
    3. ``optimizer.zero_grad()``, ``loss.backward()``;
    4. ``torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)``;
    5. ``optimizer.step()``;
    6. clamp the temperature: under ``torch.no_grad()``, ``model.logit_scale.clamp_(max=math.log(100))``. Without
       it the scale can grow until the softmax is one-hot and training stalls (the paper's fix, section 2.5);
    7. return ``loss.item()``.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("training_step: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
