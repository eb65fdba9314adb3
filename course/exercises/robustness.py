"""Exercise: effective robustness (lesson 13, notebooks/13_another_artist.ipynb).

A model's score under a distribution shift (an unseen artist's drawings) is mostly predicted by its score in
distribution (the artist it trained on): plotted on *logit* axes, models trained on one distribution lie close to one
line (Taori et al., 2020). A model's **effective robustness** is how far above that line it lies: the shifted score it
has beyond what its in-distribution score predicts. Radford et al. (2021, Figure 13) found zero-shot CLIP far above
the line of ImageNet models.

Grade your work with ``python -m course check robustness``. The reference is ``minclip/evaluate.py``
(``robustness_line``, ``effective_robustness``).

Scores are fractions strictly between 0 and 1 (recall 0.25, not 25), given as lists or 1-D tensors, one per run.
``logit(p) = log(p / (1 - p))`` and ``sigmoid`` is its inverse.

Worked example: three baseline runs with in-distribution recall ``x = [0.2, 0.5, 0.8]`` and shifted recall
``y = sigmoid(2 * logit(x) - 1)`` lie exactly on the line with slope 2 and intercept -1. A fourth run with
``x = 0.5`` and ``y = 0.5`` lies ``0.5 - sigmoid(2 * 0 - 1) = 0.5 - 0.2689 = 0.2311`` above it.
"""

import torch


def robustness_line(in_distribution, shifted) -> tuple[float, float]:
    """The least-squares line ``logit(shifted) = slope * logit(in_distribution) + intercept`` through the runs.

    Returns ``(slope, intercept)`` as Python floats.

    Hint: compute in float64 (``torch.as_tensor(values, dtype=torch.float64)``). With ``lx`` and ``ly`` the logits,
    ``slope = sum((lx - mean(lx)) * (ly - mean(ly))) / sum((lx - mean(lx)) ** 2)`` and the line passes through the
    point of means: ``intercept = mean(ly) - slope * mean(lx)``.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("robustness_line: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def effective_robustness(in_distribution, shifted, line: tuple[float, float]) -> torch.Tensor:
    """How far each run lies above ``line``: ``shifted - sigmoid(slope * logit(in_distribution) + intercept)``.

    Returns a float64 tensor ``(R,)``: zero for a run on the line, positive above it, in fractions of the metric
    (0.05 means five points of recall more than the line predicts). Note the difference is taken in the metric's own
    units, not in logits.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("effective_robustness: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
