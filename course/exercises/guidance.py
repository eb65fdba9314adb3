"""Exercise: best-of-N reranking and the straight-through one-hot (lesson 12, notebooks/12_guiding_generation.ipynb).

Two pieces of CLIP-guided generation. Reranking asks CLIP to pick the best of N samples; to measure it you need the
success of best-of-N over many samples. Guidance through a renderer needs a way to draw a *real* colour and shape
(one-hot) while the logits that choose them still get a gradient: the straight-through estimator.

Grade your work with ``python -m course check guidance``. The reference is ``minclip/guidance.py``
(``best_of_n_success``, ``straight_through_one_hot``).

Worked example for best_of_n_success (6 samples, groups of n = 2)::

    scores  = [0.1, 0.7 | 0.3, 0.9 | 0.2, 0.4]
    correct = [ F,   T  |  F,   F  |  F,   T ]
    group 1 picks 0.7 (correct), group 2 picks 0.9 (wrong), group 3 picks 0.4 (correct)  -> 2/3
"""

import torch


def best_of_n_success(scores: torch.Tensor, correct: torch.Tensor, n: int) -> float:
    """The share of groups of ``n`` samples whose highest-scoring sample is correct.

    ``scores``: ``(M,)`` float, a scorer's score of each sample; ``correct``: ``(M,)`` bool. Cut the samples, in order,
    into ``M // n`` groups of ``n`` (drop the tail that does not fill a group); in each group pick the sample with
    the highest score (the first one on ties, as ``argmax`` does); return the share of groups whose pick is correct,
    as a Python float.

    Hint: ``scores[:groups * n].view(groups, n)`` is ``(groups, n)``; ``argmax(dim=1)`` and ``gather`` do the rest.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("best_of_n_success: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def straight_through_one_hot(logits: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` -> ``(..., C)``: the one-hot of the arg-max along the last axis, with the softmax's gradient.

    Forward, every row is exactly one-hot (1 at the largest logit, 0 elsewhere), in the dtype of ``logits``.
    Backward, the gradient reaching ``logits`` is the one it would get had you returned ``logits.softmax(-1)``.

    Hint: with ``soft = logits.softmax(-1)``, the expression ``soft - soft.detach()`` is zero but has soft's gradient;
    add it to the one-hot (``torch.nn.functional.one_hot`` gives integers: convert them).
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("straight_through_one_hot: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
