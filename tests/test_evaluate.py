"""Tests for minclip/evaluate.py: every metric on small examples worked out by hand (ties included), the prompt
ensemble against a manual computation, the model-facing helpers with a stub model whose answers are known, and errors.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minclip.data import CLIP_MEAN, CLIP_STD
from minclip.evaluate import (
    average_templates,
    binding_accuracy,
    binding_evaluate,
    confusion_matrix,
    distinct_images,
    effective_robustness,
    encode_images,
    encode_texts,
    format_report,
    retrieval_evaluate,
    retrieval_recall,
    robustness_line,
    similarity_matrix,
    topk_accuracy,
    unseen_artist_report,
    within_family_accuracy,
    zero_shot_classifier,
    zero_shot_evaluate,
)

# ----------------------------------------------------------------------------------------------------------------------
# Retrieval recall@K

# 3 images; captions 0 and 1 describe image 0, caption 2 image 1, caption 3 image 2 (the docstring's example).
SIMILARITY = torch.tensor(
    [
        [0.9, 0.1, 0.0],  # caption 0: its image first                         -> text->image hit@1
        [0.2, 0.5, 0.1],  # caption 1: image 1 beats its image 0                -> miss@1, hit@2
        [0.3, 0.3, 0.0],  # caption 2: its image 1 ties with image 0            -> miss@1 (ties count against), hit@2
        [0.1, 0.0, 0.4],  # caption 3: its image first                         -> hit@1
    ]
)
CAPTION_TO_IMAGE = [0, 0, 1, 2]


def test_retrieval_recall_by_hand_with_several_captions_per_image_and_a_tie():
    report = retrieval_recall(SIMILARITY, CAPTION_TO_IMAGE, ks=(1, 2, 10))
    text_to_image, image_to_text = report["text_to_image"], report["image_to_text"]
    assert text_to_image["R@1"] == pytest.approx(2 / 4)
    assert text_to_image["R@2"] == pytest.approx(4 / 4)
    assert text_to_image["R@10"] == 1.0
    assert text_to_image["R@1_chance"] == pytest.approx(1 / 3)
    assert text_to_image["R@2_chance"] == pytest.approx(2 / 3)
    assert text_to_image["R@10_chance"] == 1.0  # K beyond the candidates: everything is in the top K
    assert text_to_image["queries"] == 4
    # Image -> text, column by column. Image 0: its best caption (0.9) beats captions 2 and 3 -> hit@1.
    # Image 1: caption 1 (0.5, of image 0) beats its caption 2 (0.3) -> miss@1, hit@2.
    # Image 2: caption 3 first -> hit@1.
    assert image_to_text["R@1"] == pytest.approx(2 / 3)
    assert image_to_text["R@2"] == 1.0
    # Chance, hypergeometric over M = 4 captions: image 0 owns 2 of them, images 1 and 2 one each.
    # R@1: 1 - C(2,1)/C(4,1) = 1/2, then 1 - 3/4 = 1/4 twice -> mean 1/3.
    # R@2: 1 - C(2,2)/C(4,2) = 5/6, then 1 - C(3,2)/C(4,2) = 1/2 twice.
    assert image_to_text["R@1_chance"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 4) / 3)
    assert image_to_text["R@2_chance"] == pytest.approx((5 / 6 + 1 / 2 + 1 / 2) / 3)
    assert image_to_text["R@10_chance"] == 1.0
    assert image_to_text["queries"] == 3


def test_image_search_alone_gives_the_same_text_to_image_half():
    full = retrieval_recall(SIMILARITY, CAPTION_TO_IMAGE, ks=(1, 2, 10))
    search_only = retrieval_recall(SIMILARITY, CAPTION_TO_IMAGE, ks=(1, 2, 10), image_to_text=False)
    assert search_only == {"text_to_image": full["text_to_image"]}


def test_second_caption_of_the_same_image_does_not_count_against_it():
    # Image 0 has captions 0 and 1; for image -> text, caption 1 scoring above caption 0 is still a hit at 1.
    similarity = torch.tensor([[0.5, 0.0], [0.8, 0.1], [0.6, 0.9]])  # (3 captions, 2 images)
    report = retrieval_recall(similarity, [0, 0, 1], ks=(1,))
    assert report["image_to_text"]["R@1"] == 1.0  # image 0: caption 1 (0.8) first; image 1: caption 2 (0.9) first
    assert report["text_to_image"]["R@1"] == 1.0


def test_uncaptioned_images_are_candidates_but_not_queries():
    # Image 2 has no caption: it competes in image search (and wins for caption 1) but is not an image->text query.
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.3, 0.7]])  # (2 captions, 3 images)
    report = retrieval_recall(similarity, [0, 1], ks=(1, 2))
    assert report["text_to_image"]["R@1"] == 0.5 and report["text_to_image"]["R@2"] == 1.0
    assert report["text_to_image"]["R@1_chance"] == pytest.approx(1 / 3)
    assert report["image_to_text"]["queries"] == 2
    assert report["image_to_text"]["R@1"] == 1.0  # image 0: 0.9 > 0.1; image 1: 0.3 > 0.1
    assert report["image_to_text"]["R@1_chance"] == pytest.approx(1 / 2)


def test_a_collapsed_model_scores_zero_not_everything():
    # Every pair the same score: each correct item ties with every wrong one, and ties count against the model.
    report = retrieval_recall(torch.zeros(4, 3), CAPTION_TO_IMAGE, ks=(1, 2, 3))
    assert [report["text_to_image"][f"R@{k}"] for k in (1, 2, 3)] == [0.0, 0.0, 1.0]  # 2 wrong images tie: rank 2
    # Image 0 (2 of 4 captions): 2 wrong captions tie -> hit only at K = 3; images 1 and 2: 3 wrong captions tie.
    assert report["image_to_text"]["R@3"] == pytest.approx(1 / 3)


def test_similarity_matrix_is_cosine_and_checks_shapes():
    queries, candidates = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0], [5.0, 0.0], [-1.0, -1.0]])
    expected = torch.tensor([[0.8, 0.6, -7 / (5 * math.sqrt(2))], [0.0, 1.0, -1 / math.sqrt(2)]])
    torch.testing.assert_close(similarity_matrix(queries, candidates), expected)
    with pytest.raises(ValueError, match=r"same feature dim, got 2 and 3"):
        similarity_matrix(queries, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"candidates must be 2-D \(N, D\).*\(2,\)"):
        similarity_matrix(queries, torch.zeros(2))
    with pytest.raises(TypeError, match="queries must be a torch.Tensor.*list"):
        similarity_matrix([[1.0, 0.0]], candidates)


def test_retrieval_recall_errors():
    with pytest.raises(ValueError, match=r"caption_to_image must be 1-D with 3 entries, got shape \(4,\).*transpose"):
        retrieval_recall(SIMILARITY.T, CAPTION_TO_IMAGE)  # (images, captions) by mistake
    with pytest.raises(ValueError, match=r"caption_to_image must be indices in \[0, 3\), got values from 0 to 3"):
        retrieval_recall(SIMILARITY, [0, 0, 1, 3])
    with pytest.raises(TypeError, match="integer indices.*float"):
        retrieval_recall(SIMILARITY, [0.0, 0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"similarity must be 2-D.*\(4,\)"):
        retrieval_recall(SIMILARITY[:, 0], CAPTION_TO_IMAGE)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(torch.full((4, 3), float("nan")), CAPTION_TO_IMAGE)
    with pytest.raises(ValueError, match=r"ks must be positive integers.*\(0, 5\)"):
        retrieval_recall(SIMILARITY, CAPTION_TO_IMAGE, ks=(0, 5))


# ----------------------------------------------------------------------------------------------------------------------
# Classification metrics


def test_topk_accuracy_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0],  # true 0: first                          -> top1, top2
            [0.5, 0.4, 0.6, 0.0],  # true 1: third                          -> neither
            [0.3, 0.2, 0.1, 0.3],  # true 3: ties with class 0 for first    -> not top1 (tie), top2
        ]
    )
    metrics = topk_accuracy(scores, [0, 1, 3], ks=(1, 2, 5))
    assert metrics["top1"] == pytest.approx(1 / 3)
    assert metrics["top2"] == pytest.approx(2 / 3)
    assert metrics["top5"] == 1.0
    assert (metrics["top1_chance"], metrics["top2_chance"], metrics["top5_chance"]) == (1 / 4, 2 / 4, 1.0)
    assert metrics["queries"] == 3


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix(predictions=[0, 1, 1, 2, 0, 2], labels=[0, 1, 2, 2, 1, 2], num_classes=4)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(matrix, expected)
    assert matrix.sum(dim=1).tolist() == [1, 2, 3, 0]  # rows: how many examples of each true class


def test_classification_errors():
    with pytest.raises(ValueError, match=r"labels must be 1-D with 3 entries.*\(2,\)"):
        topk_accuracy(torch.zeros(3, 4), [0, 1])
    with pytest.raises(ValueError, match=r"labels must be indices in \[0, 4\).*0 to 4"):
        topk_accuracy(torch.zeros(3, 4), [0, 1, 4])
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        topk_accuracy(torch.zeros(3, 4, dtype=torch.long), [0, 1, 2])
    with pytest.raises(ValueError, match="scores is empty"):
        topk_accuracy(torch.zeros(0, 4), [])
    with pytest.raises(ValueError, match=r"predictions must be indices in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match=r"predictions must be 1-D with 2 entries"):
        confusion_matrix([0], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        confusion_matrix([0], [0], num_classes=0)


# ----------------------------------------------------------------------------------------------------------------------
# Within-family and binding accuracy


def test_within_family_accuracy_by_hand():
    # Candidates 0-2 form family "a", 3-4 family "b", 5 is alone ("c").
    families = ["a", "a", "a", "b", "b", "c"]
    scores = torch.tensor(
        [
            [0.5, 0.4, 0.3, 0.9, 0.0, 0.0],  # target 0: beats siblings 1, 2 (candidate 3 is not a sibling) -> hit
            [0.6, 0.5, 0.1, 0.0, 0.0, 0.0],  # target 1: sibling 0 scores higher                              -> miss
            [0.0, 0.0, 0.0, 0.7, 0.7, 0.0],  # target 4: ties with sibling 3                                  -> miss
            [0.0, 0.0, 0.0, 0.1, 0.2, 0.0],  # target 4: above sibling 3                                      -> hit
            [0.9, 0.0, 0.0, 0.0, 0.0, 0.1],  # target 5: no siblings, left out
        ]
    )
    metrics = within_family_accuracy(scores, [0, 1, 4, 4, 5], families)
    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["accuracy_chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert metrics["queries"] == 4
    assert within_family_accuracy(scores, [0, 1, 4, 4, 5], torch.tensor([7, 7, 7, 2, 2, 9])) == metrics  # int labels


def test_within_family_errors():
    with pytest.raises(ValueError, match=r"one label per candidate \(3 = scores.shape\[1\]\), got 2"):
        within_family_accuracy(torch.zeros(2, 3), [0, 1], ["a", "a"])
    with pytest.raises(ValueError, match="single member"):
        within_family_accuracy(torch.zeros(2, 3), [0, 1], ["a", "b", "c"])


def test_binding_accuracy_by_hand():
    true_scores = torch.tensor([0.9, 0.5, 0.4])
    foil_scores = torch.tensor([[0.1, 0.2], [0.6, 0.1], [0.4, 0.0]])  # image 2's true caption ties a foil: 1/2
    metrics = binding_accuracy(true_scores, foil_scores)
    assert metrics == {"accuracy": pytest.approx((1 + 0 + 1 / 2) / 3), "accuracy_chance": pytest.approx(1 / 3),
                       "queries": 3}
    all_tied = binding_accuracy(torch.full((4,), 0.3), torch.full((4, 2), 0.3))  # blind model: exactly chance
    assert all_tied["accuracy"] == pytest.approx(all_tied["accuracy_chance"])
    with pytest.raises(ValueError, match=r"foil_scores must be \(N, n_foils\) with N = len\(true_scores\) = 3"):
        binding_accuracy(true_scores, foil_scores[:2])
    with pytest.raises(ValueError, match=r"true_scores must be a 1-D tensor"):
        binding_accuracy(true_scores[:, None], foil_scores)


# ----------------------------------------------------------------------------------------------------------------------
# Prompt ensembles


def test_average_templates_equals_manual_computation():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 3, 8, generator=generator) * torch.rand(4, 3, 1, generator=generator) * 5  # (C, T, D)
    expected = []
    for per_class in features:  # (T, D)
        unit_vectors = [row / row.norm() for row in per_class]
        mean = sum(unit_vectors) / len(unit_vectors)
        expected.append(mean / mean.norm())
    torch.testing.assert_close(average_templates(features), torch.stack(expected))
    # Each template has an equal say whatever the length of its feature vector.
    rescaled = features * torch.tensor([1.0, 100.0, 0.01])[None, :, None]
    torch.testing.assert_close(average_templates(rescaled), average_templates(features))
    with pytest.raises(ValueError, match=r"text_features must be \(classes, templates, D\), got \(4, 8\)"):
        average_templates(features[:, 0])


# ----------------------------------------------------------------------------------------------------------------------
# Model-facing helpers with a stub model

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
CAPTIONS = [template.format(name) for name in CLASSES for template in TEMPLATES]  # class-major, like the classifier


class StubTokenizer:
    """Tokenizes a known caption to ``[caption id, 0, 0, ...]``; remembers the context lengths it was asked for."""

    def __init__(self, captions):
        self.ids = {caption: index for index, caption in enumerate(captions)}
        self.context_lengths = []

    def tokenize(self, texts, context_length=77, truncate=False):
        self.context_lengths.append(context_length)
        tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
        tokens[:, 0] = torch.tensor([self.ids[text] for text in texts])
        return tokens


class StubModel(nn.Module):
    """encode_text looks the caption's features up in a table; encode_image averages each channel of the image.

    An image filled with channel values (r, g, b) has features (r, g, b): image "looks like" class c when its
    channels are the one-hot of c. Every call records its batch size, training mode and whether autograd was on.
    """

    context_length = 5

    def __init__(self, text_table):
        super().__init__()
        self.text_table = nn.Parameter(text_table)  # a parameter: features would carry gradients outside no_grad
        self.calls = []

    def encode_text(self, tokens):
        self.calls.append(("text", tokens.shape[0], self.training, torch.is_grad_enabled()))
        return 3.0 * self.text_table[tokens[:, 0]]  # unnormalised, as a real model's

    def encode_image(self, images):
        self.calls.append(("image", images.shape[0], self.training, torch.is_grad_enabled()))
        return 2.0 * images.mean(dim=(2, 3)) + 0 * self.text_table.sum()  # (B, 3)


def stub_text_table():
    # Caption features: the class one-hot plus a template-specific tilt ("a drawing of" leans towards channel 2).
    table = torch.zeros(len(CAPTIONS), 3)
    for index, caption in enumerate(CAPTIONS):
        table[index, CLASSES.index(caption.split()[-1].rstrip("."))] = 1.0
        if caption.startswith("a drawing"):
            table[index, 2] += 0.3
    return table


def images_from_channels(channels):
    return torch.tensor(channels, dtype=torch.float32)[:, :, None, None].expand(-1, -1, 2, 2).clone()  # (N, 3, 2, 2)


def test_zero_shot_classifier_is_the_template_average_of_the_encoded_captions():
    model, tokenizer = StubModel(stub_text_table()), StubTokenizer(CAPTIONS)
    classifier = zero_shot_classifier(model, tokenizer, CLASSES, TEMPLATES, batch_size=4)
    expected = average_templates(stub_text_table().view(3, 2, 3))  # (classes, templates, D)
    torch.testing.assert_close(classifier, expected)
    assert tokenizer.context_lengths == [5, 5]  # the model's context length, 6 captions in batches of 4
    assert [call[1] for call in model.calls] == [4, 2]
    # Callables work as templates too.
    callables = [lambda name: f"a photo of a {name}.", lambda name: f"a drawing of a {name}."]
    torch.testing.assert_close(zero_shot_classifier(model, tokenizer, CLASSES, callables), expected)


def test_zero_shot_evaluate_known_answer_eval_mode_and_no_grad():
    model, tokenizer = StubModel(stub_text_table()), StubTokenizer(CAPTIONS)
    model.train()
    # Two cats, two dogs, a bird, and a "cat" that looks like a dog (mostly green).
    images = images_from_channels([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 1, 0], [0, 0, 1], [0.2, 1, 0]])
    labels = [0, 0, 1, 1, 2, 0]
    metrics = zero_shot_evaluate(model, tokenizer, images, labels, CLASSES, TEMPLATES, ks=(1, 2), batch_size=4)
    assert metrics["top1"] == pytest.approx(5 / 6) and metrics["top1_chance"] == pytest.approx(1 / 3)
    assert metrics["top2"] == 1.0 and metrics["top2_chance"] == pytest.approx(2 / 3)  # the odd cat: cat is 2nd
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert all(not training and not grad_enabled for _, _, training, grad_enabled in model.calls)
    assert model.training  # training mode restored afterwards
    assert [size for kind, size, _, _ in model.calls if kind == "image"] == [4, 2]


def test_encoders_return_unit_cpu_features_without_graph_and_check_inputs():
    model, tokenizer = StubModel(stub_text_table()), StubTokenizer(CAPTIONS)
    text_features = encode_texts(model, tokenizer, CAPTIONS[:3], context_length=7)
    assert tokenizer.context_lengths == [7]
    torch.testing.assert_close(text_features, F.normalize(stub_text_table()[:3], dim=-1))
    assert not text_features.requires_grad and text_features.device.type == "cpu"
    uint8_images = torch.full((2, 2, 2, 3), 255, dtype=torch.uint8)  # (N, H, W, 3), not model input yet
    image_features = encode_images(model, uint8_images, preprocess=lambda batch: batch.permute(0, 3, 1, 2) / 255.0)
    torch.testing.assert_close(image_features, torch.full((2, 3), 1 / math.sqrt(3)))
    with pytest.raises(TypeError, match=r"float tensor \(B, 3, H, W\): pass preprocess=.*torch.uint8"):
        encode_images(model, uint8_images)
    with pytest.raises(TypeError, match="list of strings, got one string 'a photo of a cat.'"):
        encode_texts(model, tokenizer, "a photo of a cat.")
    with pytest.raises(ValueError, match="texts is empty"):
        encode_texts(model, tokenizer, [])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        encode_images(model, images_from_channels([[1, 0, 0]]), batch_size=0)
    with pytest.raises(ValueError, match=r"each template must be a string with a \{\}.*'a photo'"):
        zero_shot_classifier(model, tokenizer, CLASSES, ["a photo"])


def test_retrieval_and_binding_evaluate_with_the_stub_match_the_metrics_on_features():
    model, tokenizer = StubModel(stub_text_table()), StubTokenizer(CAPTIONS)
    images = images_from_channels([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.1, 0.9, 0.2]])
    caption_to_image = [0, 0, 1, 1, 2, 2]
    report = retrieval_evaluate(model, tokenizer, images, CAPTIONS, caption_to_image, families=["a", "b", "c", "b"])
    similarity = similarity_matrix(stub_text_table(), images.mean(dim=(2, 3)))  # (captions, images)
    assert report["text_to_image"] == retrieval_recall(similarity, caption_to_image)["text_to_image"]
    assert report["image_to_text"] == retrieval_recall(similarity, caption_to_image)["image_to_text"]
    assert report["within_family"] == within_family_accuracy(similarity, caption_to_image, ["a", "b", "c", "b"])
    assert report["within_family"]["queries"] == 2  # the two dog captions: image 1 against its sibling image 3

    # Binding: each image's true caption against two foils (captions of other classes).
    true_captions = ["a photo of a cat.", "a photo of a dog.", "a photo of a bird."]
    foils = [["a photo of a dog.", "a photo of a bird."], ["a photo of a cat.", "a drawing of a bird."],
             ["a drawing of a dog.", "a drawing of a bird."]]
    metrics = binding_evaluate(model, tokenizer, images[:3], true_captions, foils)
    # Image 2 (pure channel 2): "a drawing of a bird." (0, 0, 1.3) has the same direction as its true caption: a tie,
    # worth half a hit.
    assert metrics == {"accuracy": pytest.approx((2 + 1 / 2) / 3), "accuracy_chance": pytest.approx(1 / 3),
                       "queries": 3}
    with pytest.raises(ValueError, match="the same number"):
        binding_evaluate(model, tokenizer, images[:2], true_captions[:2], [foils[0], foils[1][:1]])


# ----------------------------------------------------------------------------------------------------------------------
# Leave one artist out, on a made-up set of six emoji


class ColourConcepts(nn.Module):
    """A model that knows each emoji's concept in any style: a name's features are its emoji's colour, and an image's
    features are its mean colour. Drawings are solid colours here, so every artist's drawing of an emoji matches."""

    context_length = 3

    def __init__(self, colours):
        super().__init__()
        self.colours = colours  # (6, 3): the colour of each emoji
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode_text(self, tokens):
        return self.colours[tokens[:, 0]] + 0 * self.anchor  # (B, 3)

    def encode_image(self, images):
        rgb = images.mean(dim=(2, 3)) * torch.tensor(CLIP_STD) + torch.tensor(CLIP_MEAN)  # (B, 3), undo to_model_input
        return (rgb * 255 - 20) / 200 + 0 * self.anchor  # the colour the test painted with


def test_distinct_images_maps_each_image_to_its_first_copy():
    images = torch.tensor([[[1]], [[2]], [[1]], [[3]], [[2]]], dtype=torch.uint8)
    assert distinct_images(images) == [0, 1, 0, 3, 1]


def test_unseen_artist_report_on_a_made_up_set(monkeypatch):
    import minclip.data

    names = ["red heart", "blue heart", "green apple", "flag: Norway", "flag: Svalbard", "moon"]
    splits = ["train", "train", "test", "train", "train", "test"]
    records = [{"name_en": n, "split": s} for n, s in zip(names, splits)]
    colours = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1], [1, 0, 1], [1, 1, 0]])  # Norway = Svalbard
    solid = (colours * 200 + 20).to(torch.uint8)[:, None, None, :].expand(-1, 2, 2, -1).clone()  # (6, 2, 2, 3)
    drawn = {"noto": torch.ones(6, dtype=torch.bool), "pen": torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool)}
    monkeypatch.setattr(minclip.data, "load_emoji", lambda image_size: (records, solid))
    monkeypatch.setattr(minclip.data, "load_artist", lambda artist, image_size: (solid.clone(), drawn[artist]))
    tokenizer = StubTokenizer(names)
    model = ColourConcepts(colours)

    report = unseen_artist_report(model, tokenizer, "pen", "en", image_size=2)
    # "pen" draws five emoji, two of them alike: four candidates; the moon (not drawn) asks nothing
    assert report["artist"] == "pen" and report["candidate_images"] == 4
    train, test = report["training_captions"], report["heldout_compositions"]
    assert (train["queries"], test["queries"]) == (4, 1)
    assert train["R@1"] == test["R@1"] == 1.0  # both flags find their shared drawing: identical drawings are one
    assert train["R@1_chance"] == pytest.approx(1 / 4) and train["R@5_chance"] == 1.0
    twin = report["twin_in_noto"]
    assert twin["queries"] == 5 and twin["R@1"] == 1.0 and twin["R@1_chance"] == pytest.approx(1 / 5)

    blind = ColourConcepts(colours)
    blind.encode_image = lambda images: torch.ones(len(images), 3)  # every drawing alike: ties count against it
    assert unseen_artist_report(blind, tokenizer, "pen", "en", image_size=2)["training_captions"]["R@1"] == 0.0

    cache = {}  # shared by the calls of one report: the names and Noto's drawings are encoded once
    encoded = []
    counting = ColourConcepts(colours)
    counting.encode_text = lambda tokens: encoded.append(len(tokens)) or model.encode_text(tokens)
    assert unseen_artist_report(counting, tokenizer, "pen", "en", image_size=2, cache=cache) == report
    assert unseen_artist_report(counting, tokenizer, "pen", "en", image_size=2, cache=cache) == report
    assert encoded == [6]  # every name once, for both calls


def test_format_report_aligns_nested_metrics_with_their_chance_levels():
    report = {"data": "emoji", "lang": "en", "test_captions": 2, "candidate_images": 9,
              "among_all_images": {"text_to_image": {"R@1": 0.5, "R@1_chance": 1 / 9, "queries": 2}},
              "unseen_artists": {"fluent_color": {"artist": "fluent_color", "candidate_images": 4,
                                                  "heldout_compositions": {"R@1": 0.25, "R@1_chance": 0.25}}}}
    lines = format_report(report).splitlines()
    assert lines[0] == "held-out report: emoji (en), 2 test captions, 9 candidate images"
    assert [line.split()[0] for line in lines[1:]] == [
        "metric", "among_all_images.text_to_image.R@1", "unseen_artists.fluent_color.heldout_compositions.R@1"]
    assert lines[2].split()[1:] == ["50.0%", "11.1%"] and lines[3].split()[1:] == ["25.0%", "25.0%"]
    assert len({line.index("%") for line in lines[2:]}) == 1  # the value column lines up


# ----------------------------------------------------------------------------------------------------------------------
# Effective robustness: the baseline line on logit axes and the distance above it


def test_robustness_line_recovers_a_line_in_logit_space_and_runs_on_it_have_zero_effective_robustness():
    x = torch.tensor([0.05, 0.2, 0.4, 0.7], dtype=torch.float64)
    slope, intercept = 0.8, -1.5
    y = torch.sigmoid(slope * torch.logit(x) + intercept)  # four runs exactly on the line
    fitted = robustness_line(x, y)
    assert fitted == pytest.approx((slope, intercept), abs=1e-9)
    torch.testing.assert_close(effective_robustness(x, y, fitted), torch.zeros(4, dtype=torch.float64), atol=1e-12,
                               rtol=0)


def test_robustness_line_is_least_squares_and_effective_robustness_is_the_gap_above_it():
    x, y = [0.1, 0.3, 0.5], [0.02, 0.03, 0.08]
    lx, ly = torch.logit(torch.tensor(x, dtype=torch.float64)), torch.logit(torch.tensor(y, dtype=torch.float64))
    design = torch.stack([lx, torch.ones(3, dtype=torch.float64)], dim=1)  # (3, 2)
    slope, intercept = torch.linalg.lstsq(design, ly[:, None]).solution.flatten().tolist()
    assert robustness_line(x, y) == pytest.approx((slope, intercept), abs=1e-9)
    # a run above the baseline: the same in-distribution score as the second one, a higher shifted one
    gap = effective_robustness([0.3], [0.10], (slope, intercept))
    expected = 0.10 - 1 / (1 + math.exp(-(slope * math.log(0.3 / 0.7) + intercept)))
    assert gap.item() == pytest.approx(expected, abs=1e-12) and gap.item() > 0


@pytest.mark.parametrize("x, y, message", [
    ([0.1, 25.0], [0.1, 0.2], "strictly between 0 and 1"),
    ([0.1, 0.0], [0.1, 0.2], "strictly between 0 and 1"),
    ([0.3], [0.1], "at least two runs"),
    ([0.3, 0.3], [0.1, 0.2], "at least two runs"),
    ([0.1, 0.2, 0.3], [0.1, 0.2], "at least two runs"),
])
def test_robustness_line_rejects_what_it_cannot_fit(x, y, message):
    with pytest.raises(ValueError, match=message):
        robustness_line(x, y)


def test_effective_robustness_needs_one_shifted_value_per_run():
    with pytest.raises(ValueError, match="one value per run"):
        effective_robustness([0.1, 0.2], [0.1], (1.0, 0.0))
