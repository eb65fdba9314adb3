"""Checks for course/exercises/guidance.py against minclip/guidance.py (best_of_n_success, straight_through_one_hot)."""

import torch

from minclip.guidance import best_of_n_success, straight_through_one_hot

from .base import Exercise, Wrong, call, expect_close, expect_number, function, generator

EXERCISE = Exercise(
    name="guidance",
    title="Best-of-N reranking measured, and the straight-through one-hot that lets a renderer learn its colours",
    lesson="12_guiding_generation",
    reference="minclip/guidance.py",
    functions=("best_of_n_success", "straight_through_one_hot"),
)

BEST_HINT = ("cut the samples in order into M // n groups of n, take argmax of the scores within each group and "
             "average whether that sample is correct; return a Python float")
ST_HINT = ("return one_hot + soft - soft.detach() with soft = logits.softmax(-1): the value is the one-hot, the "
           "gradient the softmax's")


def _best(learner, scores, correct, n, case):
    expected = best_of_n_success(scores, correct, n)
    expect_number(call(function(learner, "best_of_n_success"), scores, correct, n), expected,
                  f"best_of_n_success with n={n} ({case})")


@EXERCISE.check(BEST_HINT)
def best_of_n_worked_example(learner):
    """the stub's worked example: n = 1, 2, 3 and 6 on six samples"""
    scores = torch.tensor([0.1, 0.7, 0.3, 0.9, 0.2, 0.4])
    correct = torch.tensor([False, True, False, False, False, True])
    for n in (1, 2, 3, 6):
        _best(learner, scores, correct, n, "worked example")


@EXERCISE.check(BEST_HINT + ". Samples that do not fill a last group are left out, not put in a smaller group")
def best_of_n_drops_the_tail(learner):
    """100 random samples in groups of 16 (six groups; the last four samples are left out), equals minclip's"""
    g = generator(0)
    scores, correct = torch.randn(100, generator=g), torch.rand(100, generator=g) < 0.3
    for n in (7, 16):
        _best(learner, scores, correct, n, "100 samples")


@EXERCISE.check(BEST_HINT + ". Pick by the scores, not by `correct`: a scorer that prefers wrong samples must fail")
def best_of_n_follows_the_scorer(learner):
    """a scorer that ranks every wrong sample first gets 0 at n = 4; one that ranks the right ones first gets 1"""
    correct = torch.tensor([True, False, False, False] * 3)
    for scores, case in ((torch.where(correct, 0.0, 1.0), "wrong samples first"),
                         (torch.where(correct, 1.0, 0.0), "right samples first")):
        _best(learner, scores, correct, 4, case)


@EXERCISE.check(ST_HINT)
def straight_through_forward_is_one_hot(learner):
    """the value is the one-hot of the arg-max, (2, 3, 5) float32 and (4, 6) float64"""
    for shape, dtype in (((2, 3, 5), torch.float32), ((4, 6), torch.float64)):
        logits = torch.randn(*shape, generator=generator(1), dtype=dtype)
        answer = call(function(learner, "straight_through_one_hot"), logits)
        expect_close(answer, straight_through_one_hot(logits).detach(), f"straight_through_one_hot of {shape}",
                     atol=0, rtol=0)


@EXERCISE.check(ST_HINT + ". detach() must cut the softmax out of the value only, not out of the gradient")
def straight_through_gradient_is_the_softmaxs(learner):
    """the gradient reaching the logits equals the softmax's, for a random weighting of the outputs"""
    logits = torch.randn(3, 5, generator=generator(2), dtype=torch.float64)
    weights = torch.randn(3, 5, generator=generator(3), dtype=torch.float64)
    mine = logits.clone().requires_grad_(True)
    answer = call(function(learner, "straight_through_one_hot"), mine)
    if not isinstance(answer, torch.Tensor) or not answer.requires_grad:
        raise Wrong("straight_through_one_hot returned a tensor without a gradient: the logits would never learn")
    (answer * weights).sum().backward()
    reference = logits.clone().requires_grad_(True)
    (reference.softmax(-1) * weights).sum().backward()
    expect_close(mine.grad, reference.grad, "the gradient reaching the logits")
