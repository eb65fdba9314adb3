"""Checks for course/exercises/infonce.py against minclip/loss.py (clip_loss) and minclip/model.py (CLIP.forward)."""

import math

import torch
import torch.nn.functional as F

from minclip.loss import clip_loss

from .base import Exercise, Wrong, call, expect_close, expect_gradients_flow, function, generator, nano_clip_batch

EXERCISE = Exercise(
    name="infonce",
    title="CLIP's contrastive loss: scaled cosine logits and the symmetric InfoNCE loss",
    lesson="05_contrastive_loss",
    reference="minclip/loss.py",
    functions=("clip_logits", "clip_loss"),
)


def _nano_clip_outputs(images: int, texts: int, seed: int):
    """Raw features of a random nano CLIP, its log-space logit_scale, and what its forward returns."""
    model, pixels, tokens = nano_clip_batch(seed, images, texts)
    model.eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(30.0))  # not the initial value, so a scale mix-up shows
        outputs = model(pixels, tokens)
        return model.encode_image(pixels), model.encode_text(tokens), model.logit_scale.detach().clone(), outputs


def _logits(learner, image_features, text_features, logit_scale):
    answer = call(function(learner, "clip_logits"), image_features, text_features, logit_scale)
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise Wrong(f"clip_logits should return a pair (logits_per_image, logits_per_text), got "
                    f"{type(answer).__name__}", "end with `return logits_per_image, logits_per_image.T`")
    return answer


LOGITS_HINT = ("normalise both feature sets to unit rows (F.normalize(x, dim=-1)), multiply by logit_scale.exp() "
               "(the model stores the scale in log space), then image_features @ text_features.T")


@EXERCISE.check(LOGITS_HINT)
def logits_match_clip_forward(learner):
    """clip_logits equals minclip's CLIP.forward on the raw features of 4 images and 4 captions"""
    image_features, text_features, logit_scale, (expected, expected_t) = _nano_clip_outputs(4, 4, 0)
    per_image, per_text = _logits(learner, image_features, text_features, logit_scale)
    if isinstance(per_image, torch.Tensor) and per_image.shape == expected.shape:
        cosine = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        if torch.allclose(per_image, logit_scale * cosine, atol=1e-5):
            raise Wrong("your logits are scaled by logit_scale itself, not by its exponential",
                        "the model keeps log(1 / temperature) (so it stays positive while training): multiply by "
                        "logit_scale.exp()")
        if torch.allclose(per_image, logit_scale.exp() * image_features @ text_features.T, atol=1e-4):
            raise Wrong("your logits use the raw features: they must be cosine similarities",
                        "F.normalize(features, dim=-1) divides every row by its length first")
    expect_close(per_image, expected, "logits_per_image", rtol=1e-4, atol=1e-4)
    expect_close(per_text, expected_t, "logits_per_text", rtol=1e-4, atol=1e-4)


@EXERCISE.check("logits_per_image is (images, texts) and logits_per_text its transpose (texts, images); nothing "
                "requires the two counts to be equal")
def logits_more_texts_than_images(learner):
    """3 images against 5 captions: logits_per_image is (3, 5), logits_per_text (5, 3)"""
    image_features, text_features, logit_scale, (expected, expected_t) = _nano_clip_outputs(3, 5, 1)
    per_image, per_text = _logits(learner, image_features, text_features, logit_scale)
    expect_close(per_image, expected, "logits_per_image", rtol=1e-4, atol=1e-4)
    expect_close(per_text, expected_t, "logits_per_text", rtol=1e-4, atol=1e-4)


def _unit_features(seed, batch, dim, dtype=torch.float32):
    g = generator(seed)
    return (F.normalize(torch.randn(batch, dim, generator=g, dtype=dtype), dim=-1),
            F.normalize(torch.randn(batch, dim, generator=g, dtype=dtype), dim=-1))


LOSS_HINT = ("logits = logit_scale * image_features @ text_features.T (B, B); labels = torch.arange(B); loss = "
             "(F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2")


def _expect_loss(learner, image_features, text_features, logit_scale, case: str):
    expected = clip_loss(image_features, text_features, logit_scale)
    loss = call(function(learner, "clip_loss"), image_features, text_features, logit_scale)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.shape != expected.shape:
        raise Wrong(f"the loss has shape {tuple(loss.shape)}: return a 0-dim scalar tensor", "use .mean(), or F.cross_"
                    "entropy's default reduction, and do not wrap the result in a list or add dims")
    if isinstance(loss, torch.Tensor) and loss.shape == expected.shape:
        _diagnose_loss(loss, image_features, text_features, logit_scale)
    expect_close(loss, expected, f"the loss ({case})", rtol=1e-5, atol=1e-6)


def _diagnose_loss(loss, image_features, text_features, logit_scale):
    """Name the classic mistakes when the learner's loss equals one of them."""
    logits = logit_scale * image_features.detach() @ text_features.detach().T  # (B, B)
    labels = torch.arange(len(logits))
    rows, columns = F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)
    if torch.isclose(rows, columns, rtol=1e-3):
        return  # (nearly) symmetric case: the mistakes below are indistinguishable from the right answer
    mistakes = {
        "only the image->text direction (rows)": rows,
        "only the text->image direction (columns)": columns,
        "the sum of the two directions, not their mean": rows + columns,
        "no logit_scale (plain cosines)": (F.cross_entropy(logits / logit_scale, labels)
                                           + F.cross_entropy(logits.T / logit_scale, labels)) / 2,
    }
    for mistake, value in mistakes.items():
        if torch.isclose(loss.detach(), value, rtol=1e-5, atol=1e-6):
            raise Wrong(f"your loss equals {mistake}",
                        "CLIP's loss is symmetric: the mean of cross-entropy over the rows (which caption is image "
                        "i's?) and over the columns (which image is caption j's?), on logits scaled by logit_scale")


@EXERCISE.check(LOSS_HINT)
def loss_matches_minclip(learner):
    """clip_loss equals minclip's on 8 random unit pairs of dim 16 at logit_scale 14.3"""
    image_features, text_features = _unit_features(0, 8, 16)  # a seed where the two directions differ by 6 %
    _expect_loss(learner, image_features, text_features, 1 / 0.07, "B=8, D=16")


@EXERCISE.check("the labels are the pair indices 0 .. B-1 (torch.arange(B) with B = the number of rows), never "
                "the feature dim")
def loss_more_pairs_than_dims(learner):
    """6 pairs of dim 3 (more pairs than dimensions), logit_scale given as a 0-dim tensor"""
    image_features, text_features = _unit_features(3, 6, 3)
    _expect_loss(learner, image_features, text_features, torch.tensor(10.0), "B=6, D=3")


@EXERCISE.check("with one pair there is a single candidate in each softmax, so both cross-entropies are exactly 0")
def loss_batch_of_one(learner):
    """a batch of one pair: the loss is 0"""
    image_features, text_features = _unit_features(4, 1, 5)
    _expect_loss(learner, image_features, text_features, 1 / 0.07, "B=1")


@EXERCISE.check("keep everything a torch operation on the inputs: no .item(), .detach(), .numpy() or Python floats, "
                "so that gradients reach the features and the temperature")
def loss_gradients_float64(learner):
    """in float64, gradients with respect to both feature sets and to logit_scale equal minclip's"""
    image_features, text_features = (t.requires_grad_() for t in _unit_features(5, 5, 4, torch.float64))
    logit_scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    inputs = {"image_features": image_features, "text_features": text_features, "logit_scale": logit_scale}
    expected_loss = clip_loss(image_features, text_features, logit_scale)
    expected = torch.autograd.grad(expected_loss, list(inputs.values()))
    loss = call(function(learner, "clip_loss"), image_features, text_features, logit_scale)
    expect_close(loss, expected_loss.detach(), "the loss (float64)")
    loss.backward()
    expect_gradients_flow(inputs, "clip_loss")
    for (name, tensor), grad in zip(inputs.items(), expected):
        expect_close(tensor.grad, grad, f"the gradient with respect to {name}")
