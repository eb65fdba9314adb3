"""Checks for course/exercises/zero_shot.py against minclip/evaluate.py (zero_shot_classifier, zero_shot_evaluate)."""

import zlib

import torch
import torch.nn.functional as F

from minclip.evaluate import similarity_matrix, zero_shot_classifier, zero_shot_evaluate

from .base import Exercise, Wrong, call, expect_close, expect_number, function, generator

EXERCISE = Exercise(
    name="zero_shot",
    title="Zero-shot classification: a prompt ensemble per class, then the most similar class",
    lesson="08_zero_shot_and_retrieval",
    reference="minclip/evaluate.py",
    functions=("build_classifier", "zero_shot_predict"),
)

CLASSNAMES = ["cat", "dog", "red circle"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "an emoji of a {}.", "a {}"]


class FakeTextTower:
    """Stands in for a trained text tower: every distinct text gets a fixed random feature of a random length.

    ``encode_texts(list_of_texts) -> (N, dim)`` is what the learner's code receives. ``tokenize`` and ``encode_text``
    let minclip's ``zero_shot_classifier`` use the very same features (a token row is an index into ``texts``).
    """

    def __init__(self, dim: int = 6, seed: int = 0):
        self.dim, self.seed, self.texts, self.calls = dim, seed, [], 0

    def encode_texts(self, texts) -> torch.Tensor:
        self.calls += 1
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TypeError(f"encode_texts takes a list of strings, got {texts!r}")
        rows = []
        for text in texts:
            g = generator(self.seed * 1_000_003 + zlib.crc32(text.encode()))
            direction = F.normalize(torch.randn(self.dim, generator=g), dim=0)
            rows.append(direction * (0.5 + 3 * torch.rand((), generator=g)))  # lengths differ from text to text
        return torch.stack(rows) if rows else torch.empty(0, self.dim)  # (N, dim)

    def tokenize(self, texts, context_length=None) -> torch.Tensor:
        start = len(self.texts)
        self.texts.extend(texts)
        return torch.arange(start, len(self.texts))[:, None]  # (N, 1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode_texts([self.texts[i] for i in tokens[:, 0].tolist()])


def _expect_classifier(learner, classnames, templates, case: str, seed: int):
    tower = FakeTextTower(seed=seed)
    expected = zero_shot_classifier(tower, tower, classnames, templates)  # (C, D)
    answer = call(function(learner, "build_classifier"), tower.encode_texts, list(classnames), list(templates))
    if isinstance(answer, torch.Tensor) and answer.shape == expected.shape and not torch.allclose(answer, expected,
                                                                                                 atol=1e-5):
        _diagnose_classifier(answer, tower, classnames, templates)
    expect_close(answer, expected, f"the classifier ({case})")


def _diagnose_classifier(answer, tower, classnames, templates):
    C, T = len(classnames), len(templates)
    features = tower.encode_texts([t.format(c) for c in classnames for t in templates]).view(C, T, -1)
    swapped = tower.encode_texts([t.format(c) for t in templates for c in classnames]).view(C, T, -1)
    mistakes = {
        "you averaged the raw features: normalise each caption's features first, so every template has an equal say":
            F.normalize(features.mean(dim=1), dim=-1),
        "your class vectors are not unit length: normalise again after averaging (a mean of unit vectors is "
        "shorter than 1)": F.normalize(features, dim=-1).mean(dim=1),
        "your captions are ordered template by template, but you split them class by class: build them with the "
        "class in the outer loop, or reshape to (T, C, D)": F.normalize(F.normalize(swapped, dim=-1).mean(dim=1),
                                                                         dim=-1),
    }
    for message, value in mistakes.items():
        if torch.allclose(answer, value, atol=1e-5):
            raise Wrong(message)


CLASSIFIER_HINT = ("captions = [template.format(name) for name in classnames for template in templates]; encode them "
                   "in one call; view as (C, T, D); normalise each row, average over T, normalise again")


@EXERCISE.check(CLASSIFIER_HINT)
def classifier_one_template(learner):
    """build_classifier with one template: each class vector is its caption's features, normalised"""
    _expect_classifier(learner, CLASSNAMES, TEMPLATES[:1], "3 classes, 1 template", seed=0)


@EXERCISE.check(CLASSIFIER_HINT)
def classifier_prompt_ensemble(learner):
    """build_classifier with 3 classes and 4 templates equals minclip's zero_shot_classifier"""
    _expect_classifier(learner, CLASSNAMES, TEMPLATES, "3 classes, 4 templates", seed=1)


@EXERCISE.check("call encode_texts once with all C * T captions (batched, as a real model wants), and split the result "
                "per class afterwards")
def classifier_encodes_in_one_batch(learner):
    """build_classifier encodes all captions in a single call to encode_texts"""
    tower = FakeTextTower(seed=2)
    call(function(learner, "build_classifier"), tower.encode_texts, list(CLASSNAMES), list(TEMPLATES))
    if tower.calls != 1:
        raise Wrong(f"your build_classifier called encode_texts {tower.calls} times for "
                    f"{len(CLASSNAMES) * len(TEMPLATES)} captions")


PREDICT_HINT = ("scores = image_features @ classifier.T is (N, C); the prediction is scores.argmax(dim=1). "
                "(Normalising the image features first does not change the argmax: it scales each row by a positive "
                "number)")


def _features(seed, rows, dim):
    g = generator(seed)
    return torch.randn(rows, dim, generator=g) * (0.5 + 3 * torch.rand(rows, 1, generator=g))  # (rows, dim)


@EXERCISE.check(PREDICT_HINT)
def predict_matches_minclip(learner):
    """zero_shot_predict on 9 images and 4 classes returns minclip's argmax of cosine similarity"""
    image_features = _features(3, 9, 6)
    classifier = F.normalize(_features(4, 4, 6), dim=-1)
    expected = similarity_matrix(image_features, classifier).argmax(dim=1)  # (N,)
    answer = call(function(learner, "zero_shot_predict"), image_features, classifier)
    if isinstance(answer, torch.Tensor) and answer.shape == (len(classifier),):
        raise Wrong("your answer has one entry per class, not per image: the argmax runs over the images (dim=0)",
                    "each image picks a class: argmax over dim=1 of the (N, C) scores")
    expect_close(answer, expected, "zero_shot_predict's answer (9 images, 4 classes)")


@EXERCISE.check(PREDICT_HINT + ". With one image the answer must still be (1,): avoid .squeeze(), which also drops "
                "the batch dim")
def predict_one_image(learner):
    """zero_shot_predict on a single image returns a (1,) tensor"""
    image_features = _features(5, 1, 6)
    classifier = F.normalize(_features(6, 5, 6), dim=-1)
    expected = similarity_matrix(image_features, classifier).argmax(dim=1)
    expect_close(call(function(learner, "zero_shot_predict"), image_features, classifier), expected,
                 "zero_shot_predict's answer (1 image, 5 classes)")


class _FakeCLIP(FakeTextTower):
    """A stand-in model for minclip's zero_shot_evaluate: images are their own features."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)  # (B, D, 1, 1) -> (B, D)


@EXERCISE.check("build the classifier from the class names and templates, predict, and compare with the labels; "
                "both earlier parts must pass first")
def pipeline_accuracy_matches_minclip(learner):
    """your classifier + prediction give the top-1 accuracy of minclip's zero_shot_evaluate on 40 images"""
    model = _FakeCLIP(seed=7)
    classnames = ["circle", "square", "triangle", "star", "heart"]
    class_vectors = zero_shot_classifier(model, model, classnames, TEMPLATES)  # (5, D)
    labels = torch.randint(0, 5, (40,), generator=generator(8))
    noise = torch.randn(40, model.dim, generator=generator(9))
    image_features = class_vectors[labels] + 0.6 * noise  # mostly near their class, some confusions
    expected = zero_shot_evaluate(model, model, image_features[:, :, None, None], labels, classnames, TEMPLATES)
    classifier = call(function(learner, "build_classifier"), model.encode_texts, classnames, list(TEMPLATES))
    predictions = call(function(learner, "zero_shot_predict"), image_features, classifier)
    if not isinstance(predictions, torch.Tensor) or predictions.shape != labels.shape:
        raise Wrong(f"zero_shot_predict should return a (40,) tensor here, got {getattr(predictions, 'shape', None)}")
    expect_number((predictions == labels).float().mean().item(), expected["top1"], "your top-1 accuracy")
