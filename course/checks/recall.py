"""Checks for course/exercises/recall.py against minclip/evaluate.py (retrieval_recall)."""

import torch

from minclip.evaluate import retrieval_recall

from .base import Exercise, call, expect_number, function, generator

EXERCISE = Exercise(
    name="recall",
    title="Retrieval recall@K both ways: image search (text->image) and caption ranking (image->text)",
    lesson="08_zero_shot_and_retrieval",
    reference="minclip/evaluate.py",
    functions=("text_to_image_recall", "image_to_text_recall"),
)

T2I_HINT = ("for caption c, its image's score is similarity[c, caption_to_image[c]]; count the *other* images "
            "scoring at least as high; a hit at K if that count is < K. Average the hits over captions")
I2T_HINT = ("for image i (one that has captions), take the best score among its own captions (column i restricted "
            "to captions with caption_to_image == i); count the captions of *other* images scoring at least as high; "
            "a hit at K if that count is < K. Average over the images that have captions")


def _expect(learner, which: str, similarity, caption_to_image, k: int, case: str):
    direction = "text_to_image" if which == "text_to_image_recall" else "image_to_text"
    expected = retrieval_recall(similarity, caption_to_image, ks=(k,))[direction][f"R@{k}"]
    answer = call(function(learner, which), similarity, caption_to_image, k)
    expect_number(answer, expected, f"{which} at K={k} ({case})")


def _shuffled_pairs(seed: int, n: int):
    """An (n, n) similarity where caption c describes image perm[c], and the true pairs tend to score higher."""
    g = generator(seed)
    caption_to_image = torch.randperm(n, generator=g)
    similarity = torch.randn(n, n, generator=g)
    similarity[torch.arange(n), caption_to_image] += 1.0  # a model that is right more often than chance
    return similarity, caption_to_image


@EXERCISE.check(T2I_HINT + ". Caption c does not describe image c here: always look its image up in caption_to_image")
def t2i_one_caption_per_image(learner):
    """text_to_image_recall at K=1 and K=3 on 8 captions of 8 images, shuffled, equals minclip's"""
    similarity, caption_to_image = _shuffled_pairs(0, 8)
    for k in (1, 3):
        _expect(learner, "text_to_image_recall", similarity, caption_to_image, k, "8 shuffled pairs")


WORKED = torch.tensor([[0.9, 0.1, 0.0],  # caption 0 -> image 0: first
                       [0.2, 0.5, 0.1],  # caption 1 -> image 0: image 1 beats it
                       [0.3, 0.3, 0.0],  # caption 2 -> image 1: tied with image 0
                       [0.1, 0.0, 0.4]])  # caption 3 -> image 2: first
WORKED_CAPTIONS = torch.tensor([0, 0, 1, 2])


@EXERCISE.check(T2I_HINT + ". A tie is a miss: a wrong image scoring *equal* to the right one counts as ranked above "
                "it (use >=), so a model that gives every pair the same score gets 0, not 100 %")
def t2i_worked_example_with_a_tie(learner):
    """the worked example of the stub's docstring (a tie counts as a miss): R@1 = 0.5, R@2 = 1.0"""
    for k in (1, 2):
        _expect(learner, "text_to_image_recall", WORKED, WORKED_CAPTIONS, k, "worked example")


@EXERCISE.check(I2T_HINT)
def i2t_worked_example(learner):
    """image_to_text_recall on the worked example (image 0 has two captions): R@1 = 2/3, R@2 = 1.0"""
    for k in (1, 2):
        _expect(learner, "image_to_text_recall", WORKED, WORKED_CAPTIONS, k, "worked example")


@EXERCISE.check(I2T_HINT + ". An image is found if *any* of its captions is in the top K")
def i2t_several_captions_per_image(learner):
    """image_to_text_recall at K=1, 2, 5 with 12 captions of 4 images (3 each), equals minclip's"""
    g = generator(1)
    caption_to_image = torch.arange(4).repeat_interleave(3)[torch.randperm(12, generator=g)]
    similarity = torch.randn(12, 4, generator=g)
    similarity[torch.arange(12), caption_to_image] += 0.8
    for k in (1, 2, 5):
        _expect(learner, "image_to_text_recall", similarity, caption_to_image, k, "3 captions per image")


@EXERCISE.check(I2T_HINT + ". An image with no caption cannot be found by caption ranking: leave it out of the "
                "average (it stays a candidate for image search)")
def i2t_image_without_captions(learner):
    """6 images of which 2 have no caption: only the 4 captioned images are queries"""
    g = generator(2)
    caption_to_image = torch.tensor([0, 1, 1, 3, 4, 0])  # images 2 and 5 have no caption
    similarity = torch.randn(6, 6, generator=g)
    for k in (1, 2):
        _expect(learner, "image_to_text_recall", similarity, caption_to_image, k, "images 2 and 5 uncaptioned")


@EXERCISE.check("ties count against the model: with every score equal, each wrong candidate ties with the right one, "
                "so nothing is found at K=1. torch.topk breaks ties arbitrarily: count with >= instead")
def ties_count_against_the_model(learner):
    """a collapsed model (every score equal) gets recall@1 = 0 in both directions"""
    similarity = torch.zeros(5, 5)
    caption_to_image = torch.arange(5)
    for which in ("text_to_image_recall", "image_to_text_recall"):
        _expect(learner, which, similarity, caption_to_image, 1, "all scores equal")


@EXERCISE.check("when K is at least the number of candidates everything is in the top K: recall is 1. Do not index "
                "past the end (torch.topk with k > n raises)")
def k_larger_than_the_candidates(learner):
    """K=10 with 3 images and 4 captions: recall is 1 both ways"""
    for which in ("text_to_image_recall", "image_to_text_recall"):
        _expect(learner, which, WORKED, WORKED_CAPTIONS, 10, "K=10")
