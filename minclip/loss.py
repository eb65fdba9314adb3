"""The contrastive losses that train CLIP: InfoNCE (``clip_loss``), SigLIP (``siglip_loss``), and both across processes.

CLIP never sees a label. A batch holds ``B`` (image, caption) pairs; the image tower and the text tower turn them into
unit vectors ``image_features`` and ``text_features``, both ``(B, D)``. Every image is scored against every caption::

    logits = logit_scale * image_features @ text_features.T      # (B, B): entry (i, j) = s * cos(image i, text j)

and the loss asks the diagonal (the true pairs) to win. That ``(B, B)`` matrix is the only place where the two towers
meet: they never attend to each other.

* ``clip_loss`` (InfoNCE, Radford et al. 2021, Figure 3; van den Oord et al. 2018): row ``i`` of ``logits`` is a
  ``B``-way classification "which caption belongs to image ``i``?" whose answer is ``i``; column ``j`` is the same
  question for caption ``j``. The loss is the mean of the two cross-entropies.
* ``siglip_loss`` (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"): every one of the ``B * B`` pairs
  is its own yes/no question, answered with a sigmoid; no softmax couples the batch together.
* ``gather_features``, ``distributed_clip_loss``, ``distributed_siglip_loss``: the same losses when the batch is split
  over several processes (``torchrun``); features are all-gathered and gradients flow back to each process's shard.
* Hard negatives (NegCLIP, Yuksekgonul et al. 2023): every loss takes optional ``foil_features`` ``(B', D)``, captions
  that are false for every image of the batch (usually a caption with its words swapped: "a blue circle left of a
  red square" for "a red circle left of a blue square"). They only ever appear as extra wrong answers, see
  ``clip_loss``.

Conventions (those of open_clip's ``loss.py``, which the tests compare against): features arrive already
L2-normalised, and ``logit_scale`` arrives already exponentiated. The model stores the scale in log space
(``model.logit_scale``, initialised to ``log(1 / 0.07)``); call the loss with ``model.logit_scale.exp()``.

This file imports only torch and the standard library, so it can be copied alone into coursework.
"""

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# SigLIP's initialisation (Zhai et al. 2023, section 3.2): the learnable log-temperature t' starts at log 10 (so the
# scale exp(t') starts at 10) and the bias b at -10. Store SIGLIP_INIT_LOG_SCALE in the model's log-space parameter.
SIGLIP_INIT_LOG_SCALE = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0


# ----------------------------------------------------------------------------------------------------------------------
# Input checks, shared by every loss (raised at the boundary, with the fix)


def _check_features(image_features, text_features) -> None:
    for name, value in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, D), got {type(value).__name__}")
        if value.dim() != 2:
            raise ValueError(
                f"{name} must be 2-D (B, D): one L2-normalised feature vector per row, got shape {tuple(value.shape)}"
            )
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if value.shape[0] == 0:
            raise ValueError(f"{name} is empty (batch size 0): the loss needs at least one (image, text) pair")
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"image_features and text_features must have the same batch size (pair i is image i with caption i), "
            f"got {image_features.shape[0]} images and {text_features.shape[0]} captions"
        )
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"image_features and text_features must have the same embedding dim to be compared, got "
            f"{image_features.shape[1]} and {text_features.shape[1]}: both towers must project to the same embed_dim"
        )
    if image_features.dtype != text_features.dtype:
        raise TypeError(
            f"image_features and text_features must have the same dtype, got {image_features.dtype} and "
            f"{text_features.dtype}: cast one of them (e.g. text_features.to(image_features.dtype))"
        )


def _check_foils(foil_features, text_features) -> None:
    """Foils are optional; when given they are more rows of captions, comparable with ``text_features``."""
    if foil_features is None:
        return
    if not isinstance(foil_features, torch.Tensor):
        raise TypeError(f"foil_features must be a torch.Tensor of shape (B', D) or None, got "
                        f"{type(foil_features).__name__}")
    if foil_features.dim() != 2 or foil_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"foil_features must be 2-D (B', D) with D = {text_features.shape[1]} like text_features "
                         f"(encode them with the same text tower), got shape {tuple(foil_features.shape)}")
    if foil_features.dtype != text_features.dtype:
        raise TypeError(f"foil_features must have the dtype of text_features ({text_features.dtype}), got "
                        f"{foil_features.dtype}")


def _candidates(text_features: torch.Tensor, foil_features) -> torch.Tensor:
    """The captions an image is scored against: the batch's ``B`` true captions, then the ``B'`` foils."""
    if foil_features is None or foil_features.shape[0] == 0:
        return text_features  # (B, D): no foils is plain InfoNCE, computed exactly as without the option
    return torch.cat([text_features, foil_features])  # (B + B', D)


def _check_scalar(value, name: str, hint: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a float or a one-element tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar (one element), got shape {tuple(value.shape)}. {hint}")


def _check_logit_scale(logit_scale) -> None:
    _check_scalar(logit_scale, "logit_scale", "Pass the model's temperature, e.g. model.logit_scale.exp().")
    # A negative scale is never what a model means: it is the telltale of passing the log-space parameter instead of
    # its exponential. The check reads the value, so it is done only where that costs no device synchronisation.
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.device.type != "cpu":
            return
        logit_scale = logit_scale.detach()
    if float(logit_scale) < 0:
        raise ValueError(
            f"logit_scale must be the exponentiated (positive) scale, got {float(logit_scale):.4g}: "
            "pass model.logit_scale.exp(), not the log-space parameter"
        )


# ----------------------------------------------------------------------------------------------------------------------
# One process


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale,
              foil_features: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE loss of CLIP over a batch of ``B`` matching (image, caption) pairs.

    Args:
        image_features: ``(B, D)``, L2-normalised rows; row ``i`` is the image of pair ``i``.
        text_features: ``(B, D)``, L2-normalised rows; row ``i`` is the caption of pair ``i``.
        logit_scale: scalar ``s > 0``, already exponentiated (``model.logit_scale.exp()``, ``1 / temperature``).
        foil_features: optional ``(B', D)``, L2-normalised hard negative captions (NegCLIP), false for every image.

    Returns:
        A scalar tensor: ``(CE(logits, labels) + CE(logits.T, labels)) / 2`` with ``logits = s * I @ T.T`` and
        ``labels = [0, 1, ..., B-1]``: the mean over the ``2B`` rows and columns of ``-log softmax(row)[correct]``.

    Why the scale: cosines lie in ``[-1, 1]``, so at ``s = 1`` the softmax stays nearly uniform and even a perfect
    embedding keeps a loss close to chance (notebook 05, section 7, derives that floor); a learned ``s`` lets the
    loss approach zero. Sanity values: random features at ``s = 1`` give about ``ln(B)``; aligned features at a large
    ``s`` give about ``0``.

    With ``foil_features`` the image -> text direction chooses among the ``B + B'`` captions (still with answer
    ``i``); the text -> image direction is unchanged, since a foil describes no image of the batch. No foils (None or
    zero rows) is plain InfoNCE. A foil must never equal a true caption of the batch: it would mark that caption wrong.

    Example:
        >>> import torch.nn.functional as F
        >>> features = F.normalize(torch.randn(8, 16), dim=-1)
        >>> clip_loss(features, features, logit_scale=100.0) < 1e-3     # every image finds its own caption
        tensor(True)
    """
    _check_features(image_features, text_features)
    _check_logit_scale(logit_scale)
    _check_foils(foil_features, text_features)
    batch = image_features.shape[0]
    candidates = _candidates(text_features, foil_features)  # (B + B', D): true captions first, then foils
    logits_per_image = logit_scale * image_features @ candidates.T  # (B, B + B'): row i scores image i
    labels = torch.arange(batch, device=image_features.device)
    image_to_text = F.cross_entropy(logits_per_image, labels)  # which caption (or foil) is image i's?
    text_to_image = F.cross_entropy(logits_per_image[:, :batch].T, labels)  # (B, B): which image is caption j's?
    return (image_to_text + text_to_image) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, logit_bias,
                foil_features: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023) over a batch of ``B`` matching pairs.

    Every (image ``i``, caption ``j``) pair is a binary question "do they match?" with logit
    ``z_ij = s * cos(image i, text j) + b`` and answer ``y_ij = +1`` on the diagonal, ``-1`` elsewhere::

        loss = -(1 / B) * sum_i sum_j log sigmoid(y_ij * z_ij)

    (the paper's normalisation: a sum over all ``B * B`` pairs divided by the batch size).

    Args:
        image_features: ``(B, D)``, L2-normalised rows.
        text_features: ``(B, D)``, L2-normalised rows.
        logit_scale: scalar ``s > 0``, already exponentiated (``exp(t')``; SigLIP initialises ``t' = log 10``).
        logit_bias: scalar ``b`` (SigLIP initialises ``b = -10``, see ``SIGLIP_INIT_BIAS``).
        foil_features: optional ``(B', D)`` hard negative captions. Meaningful here too, and simpler than in InfoNCE:
            every (image, foil) pair is one more "no" question, ``B * B'`` of them, added to the sum (still divided
            by ``B``). With none the loss is exactly the plain one.

    Why the bias, and why ``-10``: a batch holds ``B`` positives and ``B^2 - B`` negatives. Starting with ``b = -10``
    makes every pair look like a confident "no" from the first step, which is right for all but ``B`` of them, so
    training does not begin by spending large gradients undoing an even 50/50 guess on a sea of negatives.

    Unlike InfoNCE, no softmax normalises over a row of the batch: the loss is a plain sum over pairs, so it can be
    computed block by block (how the paper spreads it over devices). It is symmetric in images and texts (swapping
    them transposes the pair matrix, which does not change the sum).
    """
    _check_features(image_features, text_features)
    _check_logit_scale(logit_scale)
    _check_scalar(logit_bias, "logit_bias", "Pass the learned bias b, a scalar parameter.")
    _check_foils(foil_features, text_features)
    logits = logit_scale * image_features @ _candidates(text_features, foil_features).T + logit_bias  # (B, B + B')
    batch = image_features.shape[0]
    positive = torch.arange(logits.shape[1], device=logits.device) == torch.arange(batch, device=logits.device)[:, None]
    signs = 2 * positive.to(logits.dtype) - 1  # (B, B + B'): +1 on the true pairs (the diagonal), -1 elsewhere
    return -F.logsigmoid(signs * logits).sum() / batch


# ----------------------------------------------------------------------------------------------------------------------
# Several processes: each encodes its shard of the global batch, the loss sees the global batch
#
# With W processes holding n pairs each, InfoNCE must compare every image with all N = W * n captions: negatives from
# other processes make the task (and the gradient signal) as hard as one process with batch N. So each process
# all-gathers the features, then scores *its own* n rows against all N candidates: an (n, N) block of the (N, N)
# matrix, whose correct columns are offset by the rows of the processes before it (labels = offset + arange(n)).
#
# Gradients. ``dist.all_gather`` alone cuts the graph: the gathered copies are plain tensors. ``_AllGatherRows`` keeps
# it: its backward sums, over processes, the gradient each one computed for the gathered rows (all_reduce), and hands
# every process the slice of its own shard, so the local features keep their autograd graph down to the encoders.
# Each process's loss is the mean over its own rows, so the mean of the W losses is the loss of the global batch, and
# DistributedDataParallel, which *averages* parameter gradients over processes, then yields exactly the gradients of
# one process running the global batch (tested). The gradient that reaches a shard's features is W times the
# single-process one before that averaging.


class Gathered(NamedTuple):
    """Features of the global batch as seen by one process (what ``gather_features`` returns)."""

    image_features: torch.Tensor  # (N, D): every process's shard, in rank order
    text_features: torch.Tensor  # (N, D)
    offset: int  # row of this process's first pair in the global batch: its labels are offset + arange(n)


def _process_group(group):
    """(rank, world_size) inside ``group``, or None when there is nothing to gather (no process group, one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world_size = dist.get_world_size(group)
    return None if world_size == 1 else (dist.get_rank(group), world_size)


def _shard_sizes(rows: int, device, group) -> list[int]:
    """Number of rows every process holds (shards may differ, e.g. the last batch of an epoch)."""
    mine = torch.tensor([rows], device=device)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(everyone, mine, group=group)
    return [int(size) for size in everyone]


class _AllGatherRows(torch.autograd.Function):
    """Concatenate every process's ``(n_r, D)`` rows into ``(N, D)``; backward returns this process's summed slice."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list, rank: int, group) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        padded = F.pad(local, (0, 0, 0, max(sizes) - local.shape[0])).contiguous()  # (max_n, D): all_gather wants
        chunks = [torch.empty_like(padded) for _ in sizes]  # equal shapes, so short shards are padded, then trimmed
        dist.all_gather(chunks, padded, group=group)
        return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)])  # (N, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()  # (N, D); all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)  # every process's loss used my rows
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None  # (n_rank, D)


def _gather_rows(local: torch.Tensor, group) -> tuple[torch.Tensor, int]:
    """All-gather ``local`` ``(n, D)`` with gradients; returns ``(N, D)`` and this process's row offset."""
    process = _process_group(group)
    if process is None:
        return local, 0
    rank, _ = process
    sizes = _shard_sizes(local.shape[0], local.device, group)
    return _AllGatherRows.apply(local, sizes, rank, group), sum(sizes[:rank])


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor, group=None) -> Gathered:
    """All-gather image and text features from every process, keeping the gradient path to the local shard.

    Args:
        image_features: ``(n, D)`` this process's shard (L2-normalised).
        text_features: ``(n, D)`` the matching captions.
        group: the ``torch.distributed`` process group (default: the whole world).

    Returns:
        ``Gathered(image_features (N, D), text_features (N, D), offset)`` with the shards in rank order; pair ``i``
        of this process is row ``offset + i``. Without an initialised process group, or with one process, the inputs
        come back unchanged with ``offset = 0``, so the same training code runs everywhere.

    Every process must call this (it is a collective) and later run backward (the backward is a collective too).
    """
    _check_features(image_features, text_features)
    if _process_group(group) is None:
        return Gathered(image_features, text_features, 0)
    width = image_features.shape[1]
    pairs = torch.cat([image_features, text_features], dim=1)  # (n, 2D): one collective for both towers
    gathered, offset = _gather_rows(pairs, group)  # (N, 2D)
    return Gathered(gathered[:, :width], gathered[:, width:], offset)


def _gather_foils(foil_features, group):
    """Every process's foils ``(F, D)`` in rank order (None when no process has any), with gradients to the shard.

    Shards may hold different numbers of foils (a foil equal to a true caption is dropped); ``_gather_rows``
    pads and trims for that."""
    if foil_features is None:
        return None
    sizes = _shard_sizes(foil_features.shape[0], foil_features.device, group)
    if max(sizes) == 0:
        return None
    rank, _ = _process_group(group)
    return _AllGatherRows.apply(foil_features, sizes, rank, group)  # (F, D), F = sum of sizes


def distributed_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, group=None,
    foil_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """``clip_loss`` over the global batch when each process holds a shard of it (see the section comment above).

    Each process scores its ``n`` images against all ``N`` captions and its ``n`` captions against all ``N`` images,
    with labels ``offset + arange(n)``. Returns this process's mean over its own rows; the mean of that value over
    processes equals ``clip_loss`` of the global batch, and DDP's gradient averaging gives the global-batch
    gradients. With equal shard sizes this is exact; with unequal shards each process weighs equally (as DDP does for
    any loss). Falls back to ``clip_loss`` when there is no process group.

    ``foil_features`` ``(n', D)``: this process's hard negative captions (any number, zero included). They are
    gathered like the features, so every image is scored against all ``N`` captions and every process's foils, as
    one process with the global batch and all its foils would (``clip_loss(..., foil_features)``). Every process must
    pass foils (possibly zero rows) or none, since the gathering is a collective.
    """
    _check_features(image_features, text_features)
    _check_logit_scale(logit_scale)
    _check_foils(foil_features, text_features)
    if _process_group(group) is None:
        return clip_loss(image_features, text_features, logit_scale, foil_features)
    every = gather_features(image_features, text_features, group)
    every_foil = _gather_foils(foil_features, group)  # (F, D) or None
    labels = every.offset + torch.arange(image_features.shape[0], device=image_features.device)
    candidates = _candidates(every.text_features, every_foil)  # (N + F, D)
    logits_per_image = logit_scale * image_features @ candidates.T  # (n, N + F): my images, every caption and foil
    logits_per_text = logit_scale * text_features @ every.image_features.T  # (n, N): my captions, every image
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def distributed_siglip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, logit_bias, group=None,
    foil_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """``siglip_loss`` over the global batch when each process holds a shard of it.

    Each process gathers every caption and scores its ``n`` images against all ``N`` of them (positives at columns
    ``offset + i``), divided by ``n``: the mean of the per-process values is ``siglip_loss`` of the global batch.
    (The paper avoids the all-gather by passing caption chunks around a ring; gathering is simpler and fine at the
    sizes minclip trains.) Falls back to ``siglip_loss`` when there is no process group. ``foil_features``: as in
    ``distributed_clip_loss``, gathered and scored as negatives against this process's images.
    """
    _check_features(image_features, text_features)
    _check_logit_scale(logit_scale)
    _check_scalar(logit_bias, "logit_bias", "Pass the learned bias b, a scalar parameter.")
    _check_foils(foil_features, text_features)
    if _process_group(group) is None:
        return siglip_loss(image_features, text_features, logit_scale, logit_bias, foil_features)
    all_text_features, offset = _gather_rows(text_features, group)  # (N, D)
    candidates = _candidates(all_text_features, _gather_foils(foil_features, group))  # (N + F, D)
    logits = logit_scale * image_features @ candidates.T + logit_bias  # (n, N + F)
    rows, columns = image_features.shape[0], candidates.shape[0]
    matches = offset + torch.arange(rows, device=logits.device)  # my pair i sits at global column offset + i
    positive = torch.arange(columns, device=logits.device) == matches[:, None]  # (n, N + F): foils never match
    signs = 2 * positive.to(logits.dtype) - 1  # +1 for my true pairs, -1 elsewhere
    return -F.logsigmoid(signs * logits).sum() / rows


# ----------------------------------------------------------------------------------------------------------------------
# Modules, for code that wants the loss as a layer


class ClipLoss(nn.Module):
    """``clip_loss`` as a module: ``ClipLoss()(image_features, text_features, logit_scale)``.

    ``distributed=True`` computes it over the global batch of all processes (``distributed_clip_loss``); it also
    works in a single process, where it is plain ``clip_loss``.
    """

    def __init__(self, distributed: bool = False, group=None):
        super().__init__()
        self.distributed = distributed
        self.group = group

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale,
                foil_features: torch.Tensor | None = None) -> torch.Tensor:
        if self.distributed:
            return distributed_clip_loss(image_features, text_features, logit_scale, self.group, foil_features)
        return clip_loss(image_features, text_features, logit_scale, foil_features)


class SigLipLoss(nn.Module):
    """``siglip_loss`` as a module: ``SigLipLoss()(image_features, text_features, logit_scale, logit_bias)``.

    The temperature and bias are learned, and belong with the model like CLIP's ``logit_scale``: initialise the
    model's log-space scale to ``SIGLIP_INIT_LOG_SCALE`` (``log 10``) and its bias to ``SIGLIP_INIT_BIAS`` (``-10``).
    ``distributed=True`` computes the loss over the global batch (``distributed_siglip_loss``).
    """

    def __init__(self, distributed: bool = False, group=None):
        super().__init__()
        self.distributed = distributed
        self.group = group

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, logit_bias,
                foil_features: torch.Tensor | None = None):
        if self.distributed:
            return distributed_siglip_loss(image_features, text_features, logit_scale, logit_bias, self.group,
                                           foil_features)
        return siglip_loss(image_features, text_features, logit_scale, logit_bias, foil_features)
