"""Measuring a CLIP model: zero-shot classification, retrieval recall@K, within-family and binding accuracy.

A trained CLIP is a ranking machine: it scores every (image, text) pair by the cosine of their features. Every metric
here is a question about those rankings, and every one is reported beside its **chance level** (what a model that
ranks at random would score), because "recall@5 = 40 %" means little until you know whether chance is 1 % or 50 %.

* Zero-shot classification (Radford et al. 2021, section 3.1): turn each class name into captions with prompt
  templates ("a photo of a {}."), average their normalised text features into one vector per class (the prompt
  ensemble of section 3.1.4), and classify an image by its most similar class vector. Top-1/top-5, confusion matrix.
* Retrieval recall@K in both directions, the Flickr30k/COCO protocol: text->image is image search (rank all images
  for a caption; a hit if its image is in the top K), image->text ranks captions for an image (a hit if *any* of its
  captions is in the top K). CLIP never writes a caption; it can only pick one.
* Within-family accuracy: the correct item must outrank its own siblings only (e.g. the same emoji in other skin tones),
  which asks whether the model sees the detail that tells siblings apart.
* Binding accuracy: the true caption against foils that reuse its words in the wrong places ("a red circle and a blue
  square" against "a blue circle and a red square").
* Unseen artists and effective robustness (Taori et al. 2020; Radford et al. 2021, section 3.3 and Figure 13): the
  same captions drawn by an artist the model never trained on, and the line that baseline runs follow when recall
  under that shift is plotted against recall in distribution on logit axes; a run's distance above it.

Ties count against the model throughout: an item's rank is the number of wrong candidates scoring *at least* as high
as the best correct one. A collapsed model that gives every pair the same score therefore scores 0, not 100 %.

The file has two layers. Metric functions take scores or features (tensors) and return plain dicts of Python numbers,
ready for ``json.dumps``; a metric ``"X"`` has its chance level under ``"X_chance"``. Model-facing helpers encode
images and texts in batches, in eval mode, under ``torch.no_grad``, with any model that has ``encode_image`` and
``encode_text`` and a tokenizer with ``tokenize`` (the contract of ``minclip.model`` and ``minclip.tokenizer``).
Zero-shot ensembling follows open_clip's ``zero_shot_classifier.py``.
"""

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------------------------
# Checks and the one ranking rule every metric shares


def _as_index_tensor(values, name: str, size: int, upper: int, hint: str) -> torch.Tensor:
    """``values`` as a LongTensor ``(size,)`` of indices in ``[0, upper)``, or a clear error ending with ``hint``."""
    values = torch.as_tensor(values)
    if values.dim() != 1 or values.shape[0] != size:
        raise ValueError(f"{name} must be 1-D with {size} entries, got shape {tuple(values.shape)}; {hint}")
    if values.is_floating_point() or values.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer indices, got dtype {values.dtype}")
    if size and (values.min() < 0 or values.max() >= upper):
        raise ValueError(f"{name} must be indices in [0, {upper}), got values from {int(values.min())} to "
                         f"{int(values.max())}; {hint}")
    return values.long()


def _check_scores(scores, name: str) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{name} must be 2-D (queries, candidates), got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{name} is empty, shape {tuple(scores.shape)}: there is nothing to rank")
    if torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN: the model's features are broken (check for NaN in training)")
    return scores


def _check_ks(ks) -> tuple:
    ks = tuple(ks)
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise ValueError(f"ks must be positive integers, e.g. (1, 5, 10), got {ks}")
    return ks


def _rank_of_best_correct(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Per query, how many wrong candidates score at least as high as its best correct one (0 = ranked first).

    ``scores`` and ``correct`` are ``(Q, K)``; every row of ``correct`` must have a True. Ties count against the model.
    """
    best = torch.where(correct, scores, float("-inf")).amax(dim=1)  # (Q,)
    return ((scores >= best[:, None]) & ~correct).sum(dim=1, dtype=torch.int32)  # (Q,); int32 counts faster than int64


# ----------------------------------------------------------------------------------------------------------------------
# Metrics on features and scores


def similarity_matrix(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query with every candidate: ``(Q, D), (K, D) -> (Q, K)``.

    Rows are L2-normalised here, so raw ``encode_image``/``encode_text`` outputs can be passed directly.
    """
    for name, value in (("queries", queries), ("candidates", candidates)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (N, D) of features, got {type(value).__name__}")
        if value.dim() != 2:
            raise ValueError(f"{name} must be 2-D (N, D): one feature vector per row, got shape {tuple(value.shape)}")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries and candidates must have the same feature dim, got {queries.shape[1]} and "
                         f"{candidates.shape[1]}")
    return F.normalize(queries.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T  # (Q, K)


def average_templates(text_features: torch.Tensor) -> torch.Tensor:
    """Prompt ensemble: one unit vector per class from the features of its ``T`` template captions.

    Normalise each caption's features, average over the templates, normalise again (CLIP's recipe: averaging unit
    vectors gives every template an equal say, and the mean of unit vectors is shorter than one).

    Args:
        text_features: ``(C, T, D)``, the features of class ``c`` filled into template ``t``.

    Returns:
        ``(C, D)`` unit rows.

    Example:
        >>> features = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])     # one class, two templates
        >>> average_templates(features)                              # mean of (1, 0) and (0, 1), renormalised
        tensor([[0.7071, 0.7071]])
    """
    if not isinstance(text_features, torch.Tensor) or text_features.dim() != 3:
        shape = tuple(text_features.shape) if isinstance(text_features, torch.Tensor) else type(text_features).__name__
        raise ValueError(f"text_features must be (classes, templates, D), got {shape}")
    per_template = F.normalize(text_features, dim=-1)  # (C, T, D)
    return F.normalize(per_template.mean(dim=1), dim=-1)  # (C, D)


def topk_accuracy(scores: torch.Tensor, labels, ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracy of a classifier's scores, with chance levels.

    Args:
        scores: ``(N, C)``, the score of every class for every example (e.g. image-to-class cosine similarities).
        labels: ``(N,)`` true class indices.
        ks: which k to report.

    Returns:
        ``{"top1": ..., "top1_chance": ..., "top5": ..., "top5_chance": ..., "queries": N}``. Chance is
        ``min(k, C) / C``, the accuracy of a uniformly random ranking. A hit needs fewer than ``k`` wrong classes
        scoring at least as high as the true one (ties count against).
    """
    scores = _check_scores(scores, "scores")
    ks = _check_ks(ks)
    count, classes = scores.shape
    labels = _as_index_tensor(labels, "labels", count, classes, "scores must be (N, C): one row per example")
    correct = torch.arange(classes, device=scores.device) == labels.to(scores.device)[:, None]  # (N, C)
    rank = _rank_of_best_correct(scores, correct)  # (N,)
    metrics = {}
    for k in ks:
        metrics[f"top{k}"] = (rank < k).float().mean().item()
        metrics[f"top{k}_chance"] = min(k, classes) / classes
    metrics["queries"] = count
    return metrics


def confusion_matrix(predictions, labels, num_classes: int) -> torch.Tensor:
    """Count of (true class, predicted class) pairs: ``out[i, j]`` = examples of class ``i`` predicted as ``j``.

    Rows are true classes and sum to the class counts; the diagonal holds the correct predictions. Take
    ``predictions = scores.argmax(dim=1)`` (ties go to the lowest class index there).

    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], num_classes=3)
        tensor([[1, 0, 0],
                [0, 1, 0],
                [0, 1, 1]])
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    hint = f"num_classes = {num_classes}, one label and one prediction per example"
    labels = _as_index_tensor(labels, "labels", labels.shape[0], num_classes, hint)
    predictions = _as_index_tensor(predictions, "predictions", labels.shape[0], num_classes, hint)
    flat = labels * num_classes + predictions.to(labels.device)  # (N,): one bin per (true, predicted) pair
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)  # (C, C)


def retrieval_recall(similarity: torch.Tensor, caption_to_image, ks: Sequence[int] = (1, 5, 10),
                     image_to_text: bool = True) -> dict:
    """Recall@K for image search (text->image) and caption ranking (image->text), with chance levels.

    Args:
        similarity: ``(n_captions, n_images)`` scores, e.g. ``similarity_matrix(text_features, image_features)``.
            Every image is a candidate, including images that have no caption here.
        caption_to_image: ``(n_captions,)`` index of the image each caption describes; an image may have several.
        ks: which K to report.
        image_to_text: False leaves caption ranking out (its exact chance levels cost more than the search itself).

    Returns:
        ``{"text_to_image": {"R@1": ..., "R@1_chance": ..., ..., "queries": n_captions},
        "image_to_text": {... "queries": number of images with at least one caption}}``.

        * text->image: a caption is a hit at K if fewer than K other images score at least as high as its image.
          Chance ``min(K, n_images) / n_images``.
        * image->text: an image is a hit at K if one of its captions is in the top K, i.e. fewer than K captions of
          *other* images score at least as high as its best caption. Images without captions are not queries.
          Chance for an image with ``m`` of the ``M`` captions: ``1 - C(M - m, K) / C(M, K)`` (hypergeometric),
          averaged over the queries.

    Example (3 images; captions 0 and 1 describe image 0, caption 2 image 1, caption 3 image 2)::

        similarity = [[0.9, 0.1, 0.0],     caption 0: image 0 first                      -> t2i hit@1
                      [0.2, 0.5, 0.1],     caption 1: image 1 beats image 0              -> t2i miss@1, hit@2
                      [0.3, 0.3, 0.0],     caption 2: tie between image 1 and image 0    -> t2i miss@1 (tie), hit@2
                      [0.1, 0.0, 0.4]]     caption 3: image 2 first                      -> t2i hit@1
        image 0: its best caption (0.9) beats every other caption -> i2t hit@1
        image 1: caption 1 (0.5) beats its caption 2 (0.3)         -> i2t miss@1, hit@2
        image 2: its caption 3 (0.4) is first in its column        -> i2t hit@1
    """
    similarity = _check_scores(similarity, "similarity")
    ks = _check_ks(ks)
    n_captions, n_images = similarity.shape
    hint = f"similarity must be (n_captions, n_images), got {tuple(similarity.shape)}: transpose it if it is per image"
    caption_to_image = _as_index_tensor(caption_to_image, "caption_to_image", n_captions, n_images, hint)
    caption_to_image = caption_to_image.to(similarity.device)
    belongs = caption_to_image[:, None] == torch.arange(n_images, device=similarity.device)  # (n_captions, n_images)

    text_rank = _rank_of_best_correct(similarity, belongs)  # (n_captions,)
    text_to_image = {}
    for k in ks:
        text_to_image[f"R@{k}"] = (text_rank < k).float().mean().item()
        text_to_image[f"R@{k}_chance"] = min(k, n_images) / n_images
    text_to_image["queries"] = n_captions
    if not image_to_text:
        return {"text_to_image": text_to_image}

    counts = torch.bincount(caption_to_image, minlength=n_images)  # (n_images,): captions per image
    captioned = counts > 0  # (n_images,): images that can be queries for image->text
    image_rank = _rank_of_best_correct(similarity.T[captioned], belongs.T[captioned])  # (n_queries,)
    captions_per_image = counts[captioned].tolist()
    ranking = {}
    for k in ks:
        ranking[f"R@{k}"] = (image_rank < k).float().mean().item()
        top = min(k, n_captions)  # a random top-K misses an image when all K picks are other images' captions
        misses = [math.comb(n_captions - m, top) / math.comb(n_captions, top) for m in captions_per_image]
        ranking[f"R@{k}_chance"] = 1 - sum(misses) / len(misses)
    ranking["queries"] = len(captions_per_image)
    return {"text_to_image": text_to_image, "image_to_text": ranking}


def within_family_accuracy(scores: torch.Tensor, targets, families) -> dict:
    """How often the correct candidate outranks the other members of its own family, with the chance level.

    Emoji come in families (one base emoji in several skin tones or genders). Retrieval among all images mixes two
    skills: finding the family and telling its members apart. This metric isolates the second: for each query only
    the correct candidate's siblings compete.

    Args:
        scores: ``(Q, K)``, e.g. caption-to-image similarities.
        targets: ``(Q,)`` index of each query's correct candidate.
        families: ``K`` family labels, one per candidate (ints or strings; equal labels = same family).

    Returns:
        ``{"accuracy": ..., "accuracy_chance": ..., "queries": ...}``. A hit needs the correct candidate to score
        strictly above every sibling. Chance is the mean of ``1 / family_size`` (a random pick within the family).
        Queries whose family has a single member have nothing to choose between and are left out of all three.
    """
    scores = _check_scores(scores, "scores")
    count, candidates = scores.shape
    targets = _as_index_tensor(targets, "targets", count, candidates, "scores must be (queries, candidates)")
    if isinstance(families, torch.Tensor):
        families = families.tolist()
    families = list(families)
    if len(families) != candidates:
        raise ValueError(f"families must give one label per candidate ({candidates} = scores.shape[1]), got "
                         f"{len(families)}")
    family_ids = {}
    family = torch.tensor([family_ids.setdefault(label, len(family_ids)) for label in families])  # (K,) ints
    family, targets = family.to(scores.device), targets.to(scores.device)
    siblings = family[targets][:, None] == family[None, :]  # (Q, K): candidates in the correct one's family
    correct = torch.arange(candidates, device=scores.device) == targets[:, None]  # (Q, K)
    family_size = siblings.sum(dim=1)  # (Q,)
    keep = family_size > 1
    if not keep.any():
        raise ValueError("every query's family has a single member: there are no siblings to tell apart")
    # Only siblings compete: give every other candidate -inf, then rank as usual.
    rank = _rank_of_best_correct(scores.masked_fill(~siblings, float("-inf")), correct)  # (Q,)
    hit = (rank == 0)[keep]
    return {
        "accuracy": hit.float().mean().item(),
        "accuracy_chance": (1 / family_size[keep].double()).mean().item(),
        "queries": int(keep.sum()),
    }


def binding_accuracy(true_scores: torch.Tensor, foil_scores: torch.Tensor) -> dict:
    """How often the true caption outscores all of its foils, with the chance level ``1 / (1 + n_foils)``.

    Args:
        true_scores: ``(N,)`` the score of each image with its true caption.
        foil_scores: ``(N, F)`` the scores of the same image with ``F`` foil captions.

    Returns:
        ``{"accuracy": ..., "accuracy_chance": ..., "queries": N}``. A hit needs the true caption strictly above
        every foil; a tie at the top is settled as a fair coin would, so a true caption tied with ``k`` foils counts
        ``1 / (k + 1)``. A model that cannot tell a caption from its foils (a bag of words gives them identical
        features) then scores exactly the chance level, not zero.
    """
    if not isinstance(true_scores, torch.Tensor) or true_scores.dim() != 1:
        raise ValueError(f"true_scores must be a 1-D tensor (N,), got "
                         f"{tuple(true_scores.shape) if isinstance(true_scores, torch.Tensor) else true_scores!r}")
    foil_scores = _check_scores(foil_scores, "foil_scores")
    if foil_scores.shape[0] != true_scores.shape[0]:
        raise ValueError(f"foil_scores must be (N, n_foils) with N = len(true_scores) = {true_scores.shape[0]}, got "
                         f"{tuple(foil_scores.shape)}")
    scores = torch.cat([true_scores[:, None].to(foil_scores), foil_scores], dim=1)  # (N, 1 + F): true one first
    scores = _check_scores(scores, "true_scores and foil_scores")
    true_scores, foil_scores = scores[:, 0], scores[:, 1:]  # (N,), (N, F)
    best_foil = foil_scores.max(dim=1).values  # (N,)
    tied_foils = (foil_scores == true_scores[:, None]).sum(dim=1)  # (N,): foils with exactly the true score
    hits = (true_scores > best_foil).double() + (true_scores == best_foil).double() / (1 + tied_foils)
    return {
        "accuracy": hits.mean().item(),
        "accuracy_chance": 1 / scores.shape[1],
        "queries": scores.shape[0],
    }


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def _check_fractions(values, name: str) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.dim() != 1 or not ((values > 0) & (values < 1)).all():
        raise ValueError(f"{name} must be a 1-D sequence of fractions strictly between 0 and 1 (recall 0.25, not "
                         f"25 %), got {values.tolist()}: the logit of 0 or 1 is infinite")
    return values


def robustness_line(in_distribution, shifted) -> tuple[float, float]:
    """The line that baseline runs follow: ``logit(shifted) = slope * logit(in_distribution) + intercept``.

    Taori et al. (2020) found that models trained on one distribution lie on one such line when accuracy under a shift
    is plotted against accuracy in distribution, on logit axes; Radford et al. (2021, Figure 13) show CLIP above it.
    A least-squares fit over the baseline runs (at least two, with different in-distribution scores).

    Args:
        in_distribution: ``(R,)`` fractions in (0, 1), e.g. recall@1 on the training artist's held-out captions.
        shifted: ``(R,)`` the same runs' fractions under the shift, e.g. recall@1 on an unseen artist's drawings.

    Returns:
        ``(slope, intercept)`` as floats.
    """
    x = _logit(_check_fractions(in_distribution, "in_distribution"))
    y = _logit(_check_fractions(shifted, "shifted"))
    if len(x) != len(y) or len(x) < 2 or float(x.max() - x.min()) == 0:
        raise ValueError(f"fitting a line needs at least two runs with different in-distribution scores, got "
                         f"{len(x)} in-distribution and {len(y)} shifted values")
    x_mean, y_mean = x.mean(), y.mean()
    slope = ((x - x_mean) * (y - y_mean)).sum() / ((x - x_mean) ** 2).sum()
    return float(slope), float(y_mean - slope * x_mean)


def effective_robustness(in_distribution, shifted, line: tuple[float, float]) -> torch.Tensor:
    """How far each run lies above the baseline ``line`` (from ``robustness_line``), in fractions of the metric.

    ``shifted - sigmoid(slope * logit(in_distribution) + intercept)``: the shifted score a run has beyond what a
    baseline run with the same in-distribution score is predicted to have (Taori et al., 2020). Zero on the line;
    positive above it, i.e. more robust than its in-distribution score explains. Returns ``(R,)`` float64.
    """
    x = _logit(_check_fractions(in_distribution, "in_distribution"))
    y = _check_fractions(shifted, "shifted")
    if len(x) != len(y):
        raise ValueError(f"in_distribution and shifted must hold one value per run, got {len(x)} and {len(y)}")
    slope, intercept = line
    return y - torch.sigmoid(slope * x + intercept)


# ----------------------------------------------------------------------------------------------------------------------
# Model-facing helpers: anything with encode_image / encode_text, and a tokenizer with tokenize


@contextlib.contextmanager
def _evaluating(model):
    """Eval mode (no dropout, fixed statistics) and no autograd for the block; restores training mode after."""
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)


def _device(model) -> torch.device:
    parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def encode_images(model, images, batch_size: int = 256, preprocess: Callable | None = None) -> torch.Tensor:
    """Encode images in batches; returns L2-normalised ``(N, D)`` float32 features on the CPU.

    Args:
        model: has ``encode_image(images (B, 3, H, W) float) -> (B, D)``.
        images: model input ``(N, 3, H, W)`` float, or anything sliceable (e.g. a uint8 ``(N, H, W, 3)`` tensor, a
            list of images) when ``preprocess`` turns a slice into model input.
        batch_size: images per forward pass.
        preprocess: optional ``batch -> (b, 3, H, W)`` float tensor (e.g. the one returned by ``minclip.load``).
    """
    _check_batch_size(batch_size)
    if len(images) == 0:
        raise ValueError("images is empty: there is nothing to encode")
    device = _device(model)
    chunks = []
    with _evaluating(model):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if preprocess is not None:
                batch = preprocess(batch)
            if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
                got = f"a {batch.dtype} tensor" if isinstance(batch, torch.Tensor) else type(batch).__name__
                raise TypeError(f"images must reach the model as a float tensor (B, 3, H, W): pass preprocess= to "
                                f"convert them, got {got}")
            features = model.encode_image(batch.to(device))  # (b, D)
            chunks.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(chunks)  # (N, D)


def _context_length(model, context_length):
    """The model's context length: the argument, else ``model.context_length``, else ``model.config.context_length``."""
    if context_length is not None:
        return context_length
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "context_length", None)
        if isinstance(value, int):
            return value
    return None


def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256,
                 context_length: int | None = None) -> torch.Tensor:
    """Tokenize and encode texts in batches; returns L2-normalised ``(N, D)`` float32 features on the CPU.

    Args:
        model: has ``encode_text(tokens (B, T) long) -> (B, D)``.
        tokenizer: has ``tokenize(texts, context_length=...) -> LongTensor (B, T)``.
        texts: the strings to encode.
        batch_size: texts per forward pass.
        context_length: tokens per text; default ``model.context_length`` or ``model.config.context_length`` when the
            model has one, else the tokenizer's default. Texts too long for it raise the tokenizer's error.
    """
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of strings, got one string {texts!r}: wrap it in a list")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: there is nothing to encode")
    if not all(isinstance(text, str) for text in texts):
        wrong = next(text for text in texts if not isinstance(text, str))
        raise TypeError(f"texts must all be strings, got {type(wrong).__name__} {wrong!r}")
    _check_batch_size(batch_size)
    length = _context_length(model, context_length)
    device = _device(model)
    chunks = []
    with _evaluating(model):
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            tokens = tokenizer.tokenize(batch) if length is None else tokenizer.tokenize(batch, context_length=length)
            features = model.encode_text(tokens.to(device))  # (b, D)
            chunks.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(chunks)  # (N, D)


# Prompt ensembles for zero-shot classification (section 3.1.4): captions shaped like those the model learned from,
# averaged per class by `zero_shot_classifier`. A lone label ("cat") is rarely how a caption reads.
PHOTO_TEMPLATES = (  # for OpenAI's weights, trained on web images and the text around them
    "a photo of a {}.",
    "a picture of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a bright photo of the {}.",
    "a cropped photo of the {}.",
    "a drawing of a {}.",
    "an illustration of a {}.",
)
EMOJI_TEMPLATES = ("{}", "an emoji of {}", "a picture of {}")  # minclip's emoji models: their training templates


def _fill(template, classname: str) -> str:
    return template(classname) if callable(template) else template.format(classname)


def zero_shot_classifier(model, tokenizer, classnames: Sequence[str], templates: Sequence, batch_size: int = 256,
                         context_length: int | None = None) -> torch.Tensor:
    """One unit vector per class, the prompt ensemble of its templates: ``(C, D)``.

    Args:
        classnames: ``C`` class names, e.g. ``["cat", "dog"]``.
        templates: ``T`` prompt templates, strings with one ``{}`` for the class name (``"a photo of a {}."``) or
            callables ``classname -> caption``.

    Example:
        ``zero_shot_classifier(model, tokenizer, ["cat", "dog"], ["a photo of a {}.", "a drawing of a {}."])``
        encodes four captions and averages them per class with ``average_templates``.
    """
    if isinstance(classnames, str) or not classnames:
        raise ValueError(f"classnames must be a non-empty list of class names, got {classnames!r}")
    if isinstance(templates, str) or not templates:
        raise ValueError(f"templates must be a non-empty list like ['a photo of a {{}}.'], got {templates!r}")
    for template in templates:
        if not callable(template) and not (isinstance(template, str) and "{}" in template):
            raise ValueError(f"each template must be a string with a {{}} for the class name (or a callable), got "
                             f"{template!r}")
    captions = [_fill(template, name) for name in classnames for template in templates]  # class-major: (C * T)
    features = encode_texts(model, tokenizer, captions, batch_size, context_length)  # (C * T, D)
    return average_templates(features.view(len(classnames), len(templates), -1))  # (C, T, D) -> (C, D)


def zero_shot_evaluate(model, tokenizer, images, labels, classnames: Sequence[str], templates: Sequence,
                       ks: Sequence[int] = (1, 5), batch_size: int = 256, preprocess: Callable | None = None,
                       context_length: int | None = None) -> dict:
    """Zero-shot classification of ``images`` among ``classnames``: ``topk_accuracy`` plus the confusion matrix.

    Returns ``topk_accuracy``'s dict with ``"confusion_matrix"`` added (a ``C x C`` list of lists, rows = true class,
    columns = predicted class, see ``confusion_matrix``).
    """
    classes = zero_shot_classifier(model, tokenizer, classnames, templates, batch_size, context_length)  # (C, D)
    image_features = encode_images(model, images, batch_size, preprocess)  # (N, D)
    scores = image_features @ classes.T  # (N, C): both sides are unit vectors, so these are cosines
    metrics = topk_accuracy(scores, labels, ks)
    metrics["confusion_matrix"] = confusion_matrix(scores.argmax(dim=1), labels, len(classnames)).tolist()
    return metrics


def retrieval_evaluate(model, tokenizer, images, captions: Sequence[str], caption_to_image, families=None,
                       ks: Sequence[int] = (1, 5, 10), batch_size: int = 256, preprocess: Callable | None = None,
                       context_length: int | None = None) -> dict:
    """Encode ``images`` and ``captions`` and report ``retrieval_recall`` (and, given ``families``, one label per
    image, ``within_family_accuracy`` of image search under ``"within_family"``)."""
    image_features = encode_images(model, images, batch_size, preprocess)  # (n_images, D)
    text_features = encode_texts(model, tokenizer, captions, batch_size, context_length)  # (n_captions, D)
    similarity = text_features @ image_features.T  # (n_captions, n_images)
    report = retrieval_recall(similarity, caption_to_image, ks)
    if families is not None:
        report["within_family"] = within_family_accuracy(similarity, caption_to_image, families)
    return report


def binding_scores(image_features: torch.Tensor, true_features: torch.Tensor,
                   foil_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's score with its true caption `(N,)` and with each of its foils `(N, F)`, from unit features:
    `image_features` and `true_features` `(N, E)`, `foil_features` `(N, F, E)`. One routine scores the true caption
    and every foil, so equal features give bit-equal scores (a foil no better than the truth stays a tie)."""
    true_scores = (image_features * true_features).sum(dim=-1)  # (N,)
    foil_scores = torch.stack([(image_features * foil_features[:, f]).sum(dim=-1)
                               for f in range(foil_features.shape[1])], dim=1)  # (N, F)
    return true_scores, foil_scores


def binding_evaluate(model, tokenizer, images, true_captions: Sequence[str], foil_captions: Sequence[Sequence[str]],
                     batch_size: int = 256, preprocess: Callable | None = None,
                     context_length: int | None = None) -> dict:
    """``binding_accuracy`` of each image's true caption against its foils (``foil_captions[i]``: the same number
    of foils for every image)."""
    foil_counts = {len(foils) for foils in foil_captions}
    if len(foil_counts) != 1 or 0 in foil_counts or len(foil_captions) != len(true_captions):
        raise ValueError(f"foil_captions must hold, for each of the {len(true_captions)} images, the same number "
                         f"(>= 1) of foils; got {len(foil_captions)} lists with sizes {sorted(foil_counts)}")
    n_foils = foil_counts.pop()
    image_features = encode_images(model, images, batch_size, preprocess)  # (N, D)
    if image_features.shape[0] != len(true_captions):
        raise ValueError(f"got {image_features.shape[0]} images but {len(true_captions)} true captions")
    true_features = encode_texts(model, tokenizer, true_captions, batch_size, context_length)  # (N, D)
    flat_foils = [caption for foils in foil_captions for caption in foils]
    foil_features = encode_texts(model, tokenizer, flat_foils, batch_size, context_length)  # (N * F, D)
    foil_features = foil_features.view(len(true_captions), n_foils, -1)  # (N, F, D)
    return binding_accuracy(*binding_scores(image_features, true_features, foil_features))


# ----------------------------------------------------------------------------------------------------------------------
# Held-out reports on minclip's two data sets (what `python -m minclip train` and `eval` print)


@dataclass
class HeldOut:
    """The candidates and held-out captions a report ranks.

    images: uint8 ``(N, S, S, 3)`` candidate images; model_input: the same as float ``(N, 3, S, S)``;
    test_captions[q] describes candidate ``test_indices[q]``; families: one label per candidate (emoji) or None;
    foils: per test caption, a dict kind -> a false caption with the same words (shapes) or None.
    """

    images: torch.Tensor
    model_input: torch.Tensor
    test_indices: list
    test_captions: list
    families: list | None = None
    foils: list | None = None


def heldout_pairs(data: str, lang: str, image_size: int, seed: int = 0) -> HeldOut:
    """The held-out evaluation set of `data` in `lang` ('en' or 'ko').

    emoji: every test caption (the plain name of a held-out composition, e.g. one skin tone of a person) against
    **all** shipped images, so its training siblings in other tones or genders compete with it.
    shapes: every test caption against the test images, plus its word-swapped foils for the binding test.
    """
    from .data import CAPTION_LANGS, EmojiDataset, to_model_input  # imported here: the metric functions above need torch only
    from .shapes import ShapesDataset

    if lang not in CAPTION_LANGS:
        raise ValueError(f"held-out captions are in one language: lang must be 'en' or 'ko', got {lang!r}")
    if data == "emoji":
        everything = EmojiDataset("all", lang=lang, image_size=image_size, caption_mode="eval")
        test = [i for i, record in enumerate(everything.records) if record["split"] == "test"]
        return HeldOut(everything.images, to_model_input(everything.images), test,
                       [everything.caption(i) for i in test], families=[r["family"] for r in everything.records])
    if data == "shapes":
        test = ShapesDataset("test", lang=lang, image_size=image_size, seed=seed)
        return HeldOut(test.images, to_model_input(test.images), list(range(len(test))), list(test.captions),
                       foils=test.foils)
    raise ValueError(f"data must be 'emoji' or 'shapes', got {data!r}")


def heldout_report(model, tokenizer, data: str, lang: str, image_size: int, seed: int = 0,
                   unseen_artists: Sequence[str] = ()) -> dict:
    """The held-out report: recall@K (and within-family or binding accuracy), each beside its chance level.

    `lang='both'` reports English; train and evaluate a Korean model with `lang='ko'`. For emoji, each artist in
    `unseen_artists` (ones the model was not trained on) adds its `unseen_artist_report` under
    `report["unseen_artists"][artist]`.
    """
    lang = "en" if lang == "both" else lang
    heldout = heldout_pairs(data, lang, image_size, seed)
    image_features = encode_images(model, heldout.model_input)  # (N, E)
    text_features = encode_texts(model, tokenizer, heldout.test_captions)  # (Q, E)
    similarity = text_features @ image_features.T  # (Q, N)
    report = {"data": data, "lang": lang, "test_captions": len(heldout.test_captions),
              "candidate_images": len(heldout.images)}
    if data == "emoji":
        test = torch.tensor(heldout.test_indices)
        report["among_all_images"] = retrieval_recall(similarity, heldout.test_indices)
        report["among_test_images"] = retrieval_recall(similarity[:, test], list(range(len(test))))
        report["within_family"] = within_family_accuracy(similarity, heldout.test_indices, heldout.families)
        if unseen_artists:
            cache = {}  # the names and Noto's drawings, encoded once for all the artists
            report["unseen_artists"] = {artist: unseen_artist_report(model, tokenizer, artist, lang, image_size,
                                                                     cache=cache)
                                        for artist in unseen_artists}
    else:
        report["among_test_images"] = retrieval_recall(similarity, heldout.test_indices)
        test_image_features = image_features[heldout.test_indices]  # (Q, E): the image of each test caption
        for kind in ("colour", "shape", "role"):
            foil_features = encode_texts(model, tokenizer, [foil[kind] for foil in heldout.foils])  # (Q, E)
            scores = binding_scores(test_image_features, text_features, foil_features[:, None])  # (Q,), (Q, 1)
            report[f"binding_{kind}"] = binding_accuracy(*scores)
    return report


def distinct_images(images: torch.Tensor) -> list[int]:
    """For each image, the index of the first image with exactly the same pixels (its own index if none comes
    before it). An artist may draw two emoji alike (the flags of Norway and Svalbard); counted as one candidate.

        >>> distinct_images(torch.tensor([[1, 2], [3, 4], [1, 2]], dtype=torch.uint8))
        [0, 1, 0]
    """
    first: dict[bytes, int] = {}
    return [first.setdefault(image.numpy().tobytes(), i) for i, image in enumerate(images)]


def unseen_artist_report(model, tokenizer, artist: str, lang: str, image_size: int, reference: str = "noto",
                         cache: dict | None = None) -> dict:
    """Leave one artist out: does the model know the emoji's *concept*, or one artist's pixels?

    The shipped emoji are drawn by several artists, row for row (``minclip.data.load_artist``). For an artist the
    model never saw, three questions, each beside its chance level:

    * ``training_captions``: text -> image among all of the artist's images, for the names of the training split.
      The model knows these concepts, drawn by other hands: one shift (the style).
    * ``heldout_compositions``: the same for the test split's names: a new style *and* a new combination of known
      words, both shifts at once.
    * ``twin_in_<reference>``: image -> image, each of the artist's drawings against all of ``reference``'s images:
      is the same emoji's drawing ranked first?

    Emoji the artist does not draw are left out; identical drawings count as one candidate (``distinct_images``).
    ``cache``: a dict shared by the calls for one model (``heldout_report`` passes one), so that every emoji's name
    and the reference's drawings are encoded once, not once per artist.
    """
    from .data import load_emoji, to_model_input  # here: the metrics above need torch only

    cache = {} if cache is None else cache
    records, _ = load_emoji(image_size)
    if ("names", lang) not in cache:
        cache["names", lang] = encode_texts(model, tokenizer, [record[f"name_{lang}"] for record in records])  # (N, E)
    name_features = cache["names", lang]
    images, candidate_of = artist_candidates(artist, image_size)
    image_features = encode_images(model, to_model_input(images))  # (K, E)
    report = {"artist": artist, "candidate_images": len(images)}
    for name, split in (("training_captions", "train"), ("heldout_compositions", "test")):
        rows = [row for row in candidate_of if records[row]["split"] == split]
        text_features = name_features[rows]  # (Q, E): the names of those emoji
        recall = retrieval_recall(text_features @ image_features.T, [candidate_of[row] for row in rows],
                                  image_to_text=False)
        report[name] = recall["text_to_image"]
    if ("reference", reference) not in cache:
        reference_images, reference_of = artist_candidates(reference, image_size)
        cache["reference", reference] = encode_images(model, to_model_input(reference_images)), reference_of
    reference_features, reference_of = cache["reference", reference]  # (K', E), {row: candidate}
    shared = [row for row in candidate_of if row in reference_of]  # emoji both artists draw
    drawings = image_features[[candidate_of[row] for row in shared]]  # (Q, E): the queries
    twins = [reference_of[row] for row in shared]
    report[f"twin_in_{reference}"] = retrieval_recall(drawings @ reference_features.T, twins,
                                                      image_to_text=False)["text_to_image"]
    return report


def artist_candidates(artist: str, image_size: int) -> tuple[torch.Tensor, dict[int, int]]:
    """An artist's distinct drawings as retrieval candidates: ``(images (K, S, S, 3) uint8, {row: candidate})``,
    where ``row`` runs over the rows of captions.jsonl the artist draws and ``candidate`` indexes ``images``."""
    from .data import load_artist

    images, present = load_artist(artist, image_size)  # (N, S, S, 3), (N,) bool
    rows = present.nonzero().flatten().tolist()
    first = distinct_images(images[rows])  # positions in `rows`
    kept = sorted(set(first))
    slot = {p: k for k, p in enumerate(kept)}
    return images[[rows[p] for p in kept]], {row: slot[first[p]] for p, row in enumerate(rows)}


def format_report(report: dict) -> str:
    """The report as an aligned text table: metric, value, chance level."""
    lines = [f"held-out report: {report['data']} ({report['lang']}), {report['test_captions']} test captions, "
             f"{report['candidate_images']} candidate images"]
    rows = list(_metric_rows("", report))
    width = max(len(label) for label, _, _ in [("metric", 0, 0), *rows])
    lines.append(f"  {'metric':<{width}} {'value':>7} {'chance':>7}")
    for label, value, chance in rows:
        lines.append(f"  {label:<{width}} {100 * value:6.1f}% {'' if chance is None else f'{100 * chance:6.1f}%':>7}")
    return "\n".join(lines)


def _metric_rows(prefix: str, metrics: dict):
    """(dotted name, value, chance or None) for every float metric in a nested report."""
    for name, value in metrics.items():
        label = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            yield from _metric_rows(label, value)
        elif isinstance(value, float) and not name.endswith("_chance"):
            yield label, value, metrics.get(f"{name}_chance")
