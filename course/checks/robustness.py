"""Checks for course/exercises/robustness.py against minclip/evaluate.py (robustness_line, effective_robustness)."""

import torch

from minclip.evaluate import effective_robustness, robustness_line

from .base import Exercise, Wrong, call, expect_close, expect_number, function, generator

EXERCISE = Exercise(
    name="robustness",
    title="Effective robustness: the logit-axes line of baseline runs and a run's distance above it",
    lesson="13_another_artist",
    reference="minclip/evaluate.py",
    functions=("robustness_line", "effective_robustness"),
)

LINE_HINT = ("take logits of both scores first (log(p / (1 - p))), then fit ordinary least squares: slope = "
             "covariance / variance of the x logits, and the line passes through the point of the means")
GAP_HINT = ("predict each run's shifted score from the line (sigmoid(slope * logit(x) + intercept)) and subtract the "
            "prediction from the measured shifted score, in the metric's units (not in logits)")


def _line(learner, x, y, case: str) -> tuple[float, float]:
    answer = call(function(learner, "robustness_line"), x, y)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"robustness_line ({case}) should return (slope, intercept), got {answer!r}", LINE_HINT)
    return answer


def _expect_line(learner, x, y, case: str) -> None:
    slope, intercept = _line(learner, x, y, case)
    expected_slope, expected_intercept = robustness_line(x, y)
    expect_number(slope, expected_slope, f"the slope ({case})", tol=1e-8, hint=LINE_HINT)
    expect_number(intercept, expected_intercept, f"the intercept ({case})", tol=1e-8, hint=LINE_HINT)


def _worked_example():
    x = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    y = torch.sigmoid(2 * torch.log(x / (1 - x)) - 1)
    return x, y


@EXERCISE.check(LINE_HINT)
def line_through_points_on_a_line(learner):
    """the worked example: runs exactly on logit(y) = 2 logit(x) - 1 give slope 2 and intercept -1"""
    x, y = _worked_example()
    slope, intercept = _line(learner, x.tolist(), y.tolist(), "worked example, lists")
    expect_number(slope, 2.0, "the slope (worked example)", tol=1e-8, hint=LINE_HINT)
    expect_number(intercept, -1.0, "the intercept (worked example)", tol=1e-8, hint=LINE_HINT)


@EXERCISE.check(LINE_HINT + ". On raw axes (no logit) the slope and intercept come out different")
def least_squares_on_logit_axes(learner):
    """seven scattered runs (tensors): slope and intercept equal minclip's least-squares fit on logit axes"""
    g = generator(0)
    x = torch.rand(7, generator=g, dtype=torch.float64) * 0.6 + 0.2
    y = torch.rand(7, generator=g, dtype=torch.float64) * 0.1 + 0.01
    _expect_line(learner, x, y, "7 runs")


@EXERCISE.check(LINE_HINT + ". Do not assume the runs are sorted or that there are exactly three")
def two_runs_in_any_order(learner):
    """two runs (the fewest that define a line), given high score first"""
    _expect_line(learner, [0.6, 0.1], [0.05, 0.02], "2 runs")


@EXERCISE.check(GAP_HINT)
def effective_robustness_equals_minclips(learner):
    """the worked example's fourth run lies 0.2311 above the line; six scattered runs equal minclip's"""
    x, y = _worked_example()
    line = (2.0, -1.0)
    expected = effective_robustness([0.5], [0.5], line)
    answer = call(function(learner, "effective_robustness"), [0.5], [0.5], line)
    expect_close(answer, expected, "effective_robustness of the run at x = 0.5, y = 0.5", hint=GAP_HINT)
    g = generator(1)
    x = torch.rand(6, generator=g, dtype=torch.float64) * 0.6 + 0.2
    y = torch.rand(6, generator=g, dtype=torch.float64) * 0.1 + 0.01
    line = robustness_line(x[:3], y[:3])
    answer = call(function(learner, "effective_robustness"), x, y, line)
    expect_close(answer, effective_robustness(x, y, line), "effective_robustness of 6 runs", hint=GAP_HINT)


@EXERCISE.check(GAP_HINT + ". The baseline runs themselves scatter around their own line: their gaps sum to about "
                "zero in logits, not exactly zero in recall")
def baseline_runs_lie_on_their_line(learner):
    """runs exactly on the line have effective robustness 0 (float64, one per run)"""
    x, y = _worked_example()
    answer = call(function(learner, "effective_robustness"), x, y, (2.0, -1.0))
    expect_close(answer, torch.zeros(3, dtype=torch.float64), "effective_robustness of runs on the line",
                 hint=GAP_HINT)
