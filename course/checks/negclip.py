"""Checks for course/exercises/negclip.py against minclip/foils.py (batch_foils) and minclip/loss.py
(clip_loss with foil_features)."""

import torch
import torch.nn.functional as F

from minclip.foils import batch_foils
from minclip.loss import clip_loss

from .base import Exercise, Wrong, call, expect_close, expect_gradients_flow, function, generator

EXERCISE = Exercise(
    name="negclip",
    title="Hard negative captions (NegCLIP): which foils a batch may use, and InfoNCE with foils as extra negatives",
    lesson="09_inside_clip",
    reference="minclip/loss.py",
    functions=("usable_foils", "negclip_loss"),
)

USABLE_HINT = ("normalise with ' '.join(text.casefold().split()); start a set with the batch's true captions, then "
               "walk the rows in order: skip None and any foil already in the set, else keep the row and add its foil")
LOSS_HINT = ("candidates = torch.cat([text_features, foil_features]); image_to_text = F.cross_entropy(logit_scale * "
             "image_features @ candidates.T, labels); text_to_image = F.cross_entropy(logit_scale * text_features @ "
             "image_features.T, labels); return their mean")


def _usable(learner, captions, foils, case):
    expected = batch_foils(captions, foils)
    answer = call(function(learner, "usable_foils"), list(captions), list(foils))
    if answer is None:
        raise Wrong(f"usable_foils returned None ({case}): did you forget to `return` the rows?", USABLE_HINT)
    if [int(row) for row in answer] != expected:
        raise Wrong(f"usable_foils({captions!r}, {foils!r}) gave {list(answer)}, expected {expected} ({case})")


@EXERCISE.check(USABLE_HINT)
def usable_worked_example(learner):
    """the stub's worked example: a foil equal to another row's caption (up to case and spaces) is left out"""
    _usable(learner, ["a red circle", "a blue square", "a red square"], ["a blue circle", "A red  square", None],
            "worked example")


@EXERCISE.check(USABLE_HINT + ". A foil may also equal its *own* row's caption (a swap of two equal words): drop it")
def usable_repeats_and_own_caption(learner):
    """a repeated foil counts once, a foil equal to its own caption is dropped, rows come back in order"""
    captions = ["a small red star above a small red star", "a large blue heart", "a small green circle",
                "a large red circle below a small blue star"]
    foils = ["a small red star above a small red star", "a small green circle", None,
             "a small blue star below a large red circle"]
    _usable(learner, captions, foils, "own caption and another row's")
    _usable(learner, ["a", "b", "c"], ["x", "X", "x "], "one foil three times")
    _usable(learner, ["a", "b"], [None, None], "no foils at all")


def _features(seed, rows, dim, dtype=torch.float32, requires_grad=False):
    features = F.normalize(torch.randn(rows, dim, generator=generator(seed), dtype=dtype), dim=-1)
    return features.requires_grad_(requires_grad)


def _diagnose(loss, image_features, text_features, foil_features, logit_scale):
    """Name the classic mistakes when the learner's loss equals one of them."""
    image, text, foil = image_features.detach(), text_features.detach(), foil_features.detach()
    labels = torch.arange(len(image))
    candidates = torch.cat([text, foil])
    image_to_text = F.cross_entropy(logit_scale * image @ candidates.T, labels)
    text_to_image = F.cross_entropy(logit_scale * text @ image.T, labels)
    mistakes = {
        "plain InfoNCE: the foils are not used": clip_loss(image, text, logit_scale),
        "only the image->text direction": image_to_text,
        "the sum of the two directions, not their mean": image_to_text + text_to_image,
    }
    if len(foil) == len(image):  # the foil of row i scored against image i only
        own = torch.cat([logit_scale * image @ text.T, logit_scale * (image * foil).sum(dim=1, keepdim=True)], dim=1)
        mistakes["each image against its own row's foil only (every foil is a wrong caption for every image)"] = \
            (F.cross_entropy(own, labels) + text_to_image) / 2
    for mistake, value in mistakes.items():
        if torch.isclose(loss.detach(), value, rtol=1e-6, atol=1e-7):
            raise Wrong(f"your loss equals {mistake}", LOSS_HINT)


def _expect_loss(learner, image_features, text_features, foil_features, logit_scale, case):
    expected = clip_loss(image_features, text_features, logit_scale, foil_features)
    loss = call(function(learner, "negclip_loss"), image_features, text_features, foil_features, logit_scale)
    if isinstance(loss, torch.Tensor) and loss.shape == expected.shape and len(foil_features):
        _diagnose(loss, image_features, text_features, foil_features, logit_scale)
    expect_close(loss, expected, f"the loss ({case})", rtol=1e-5, atol=1e-6)
    return loss


@EXERCISE.check(LOSS_HINT)
def loss_matches_minclip(learner):
    """6 pairs and 6 foils of dim 16 at logit_scale 14.3: equals minclip's clip_loss(..., foil_features)"""
    _expect_loss(learner, _features(0, 6, 16), _features(1, 6, 16), _features(2, 6, 16), 1 / 0.07, "B=6, F=6")


@EXERCISE.check(LOSS_HINT + ". The foils need not be as many as the pairs: labels are arange(B), B = the images")
def loss_fewer_and_more_foils(learner):
    """8 pairs with 3 foils, and 2 pairs with 5 foils (logit_scale a 0-dim tensor)"""
    _expect_loss(learner, _features(3, 8, 12), _features(4, 8, 12), _features(5, 3, 12), torch.tensor(10.0), "B=8, F=3")
    _expect_loss(learner, _features(6, 2, 12), _features(7, 2, 12), _features(8, 5, 12), torch.tensor(10.0), "B=2, F=5")


@EXERCISE.check("with no foil (a (0, D) tensor) the candidates are the B captions alone: plain InfoNCE")
def loss_without_foils_is_plain_infonce(learner):
    """zero foils: the loss equals minclip's plain clip_loss"""
    image_features, text_features = _features(9, 5, 8), _features(10, 5, 8)
    _expect_loss(learner, image_features, text_features, torch.zeros(0, 8), 14.3, "F=0")


@EXERCISE.check("keep everything a torch operation on the inputs (no .item(), .detach() or Python floats), so "
                "gradients reach the images, the captions, the foils and the temperature")
def loss_gradients_float64(learner):
    """in float64, gradients with respect to images, captions, foils and logit_scale equal minclip's"""
    inputs = {"image_features": _features(11, 5, 6, torch.float64, True),
              "text_features": _features(12, 5, 6, torch.float64, True),
              "foil_features": _features(13, 4, 6, torch.float64, True),
              "logit_scale": torch.tensor(7.0, dtype=torch.float64, requires_grad=True)}
    expected_loss = clip_loss(inputs["image_features"], inputs["text_features"], inputs["logit_scale"],
                              inputs["foil_features"])
    expected = torch.autograd.grad(expected_loss, list(inputs.values()))
    loss = _expect_loss(learner, *(inputs[name] for name in ("image_features", "text_features", "foil_features",
                                                                  "logit_scale")), "float64")
    loss.backward()
    expect_gradients_flow(inputs, "negclip_loss")
    for (name, tensor), grad in zip(inputs.items(), expected):
        expect_close(tensor.grad, grad, f"the gradient with respect to {name}")
