"""Checks for course/exercises/training.py against minclip/train.py (warmup_cosine, parameter_groups, the step)."""

import math

import torch

from minclip.train import MAX_LOGIT_SCALE, parameter_groups, train_step, warmup_cosine

from .base import Exercise, Wrong, call, expect_close, expect_number, function, nano_clip_batch

EXERCISE = Exercise(
    name="training",
    title="CLIP's training step: the learning-rate schedule, which weights decay, one step with the temperature clamp",
    lesson="07_training",
    reference="minclip/train.py",
    functions=("lr_multiplier", "weight_decay_groups", "training_step"),
)

SCHEDULE_HINT = ("while step < warmup_steps: (step + 1) / warmup_steps; afterwards progress = (step - warmup_steps) / "
                 "(total_steps - warmup_steps), capped at 1, and the multiplier is 0.5 * (1 + cos(pi * progress))")


def _expect_schedule(learner, total: int, warmup: int, steps, case: str):
    reference = warmup_cosine(total, warmup)
    for step in steps:
        answer = call(function(learner, "lr_multiplier"), step, total, warmup)
        expect_number(answer, reference(step), f"lr_multiplier(step={step}, total_steps={total}, warmup_steps="
                                               f"{warmup}) ({case})", tol=1e-9)


@EXERCISE.check(SCHEDULE_HINT + ". The warm-up counts from step 0 to 1 / warmup_steps, never 0: a step with learning "
                "rate 0 would be wasted")
def schedule_warmup_ramp(learner):
    """lr_multiplier rises linearly during the warm-up: 0.1, 0.2, ... 1.0 over 10 steps of 100"""
    _expect_schedule(learner, 100, 10, range(10), "warm-up")


@EXERCISE.check(SCHEDULE_HINT)
def schedule_cosine_decay(learner):
    """after the warm-up, lr_multiplier follows a half cosine from 1 to 0 (0.5 half-way), and stays 0 past the end"""
    _expect_schedule(learner, 100, 10, [10, 11, 32, 55, 77, 99, 100, 130], "cosine decay")


def _names(model, group) -> set[str]:
    name_of = {id(parameter): name for name, parameter in model.named_parameters()}
    return {name_of.get(id(parameter), "<not a parameter of the model>") for parameter in group}


def _expect_groups(learner, model, weight_decay: float, case: str):
    expected = parameter_groups(model, weight_decay)
    answer = call(function(learner, "weight_decay_groups"), model, weight_decay)
    if not isinstance(answer, (list, tuple)) or len(answer) != 2 or not all(isinstance(g, dict) for g in answer):
        raise Wrong(f"weight_decay_groups should return a list of two dicts, got {answer!r:.200}")
    for index, (group, want) in enumerate(zip(answer, expected)):
        if "params" not in group or "weight_decay" not in group:
            raise Wrong(f"group {index} should have the keys 'params' and 'weight_decay', got {sorted(group)}")
        if group["weight_decay"] != want["weight_decay"]:
            raise Wrong(f"group {index} has weight_decay {group['weight_decay']}, expected {want['weight_decay']}")
        got, wanted = _names(model, group["params"]), _names(model, want["params"])
        if got != wanted:
            extra, missing = sorted(got - wanted), sorted(wanted - got)
            which = "decayed" if index == 0 else "not decayed"
            detail = (f"holds {extra[:3]} that should not be there" if extra else "") + (
                "; " if extra and missing else "") + (f"misses {missing[:3]}" if missing else "")
            raise Wrong(f"the {which} group {detail} ({case})")


GROUPS_HINT = ("loop over model.named_parameters(): skip those with requires_grad False; a parameter with fewer than 2 "
               "dims (gains, biases, logit_scale), or whose name contains 'embedding', goes to the group without decay; "
               "every other (the weight matrices) to the decayed one")


@EXERCISE.check(GROUPS_HINT)
def groups_decay_only_weight_matrices(learner):
    """weight_decay_groups on a nano CLIP: matrices decay; gains, biases, embeddings and logit_scale do not"""
    model, _, _ = nano_clip_batch(0, 1, 1)
    _expect_groups(learner, model, 0.1, "nano CLIP")


@EXERCISE.check(GROUPS_HINT + ". A frozen parameter (requires_grad False) belongs to no group: the optimiser never "
                "updates it")
def groups_skip_frozen_parameters(learner):
    """with the image tower frozen (the review's recipe), its parameters are in neither group"""
    model, _, _ = nano_clip_batch(1, 1, 1)
    model.visual.requires_grad_(False)
    _expect_groups(learner, model, 0.2, "image tower frozen")


class MomentumSGD:
    """SGD with momentum (torch.optim.SGD's update), written out because the first torch.optim optimiser a process
    builds imports torch._dynamo, which costs seconds; the learner's step sees the same zero_grad() and step()."""

    def __init__(self, parameters, lr: float, momentum: float):
        self.parameters, self.lr, self.momentum = list(parameters), lr, momentum
        self.velocity = [None] * len(self.parameters)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, parameter in enumerate(self.parameters):
            if parameter.grad is None:
                continue
            v = self.velocity[i]
            self.velocity[i] = parameter.grad.clone() if v is None else v.mul_(self.momentum).add_(parameter.grad)
            parameter.sub_(self.lr * self.velocity[i])


def _expect_steps(learner, seed: int, steps: int, grad_clip: float, logit_scale: float | None, case: str):
    """Run ``steps`` training steps with the learner's function and with minclip's on two identical models."""
    models, batch = [], None
    for _ in range(2):
        model, images, tokens = nano_clip_batch(seed, 6, 6)
        if logit_scale is not None:
            with torch.no_grad():
                model.logit_scale.fill_(logit_scale)
        models.append(model)
        batch = (images, tokens)
    theirs, ours = models
    optimizers = [MomentumSGD(model.parameters(), lr=0.1, momentum=0.9) for model in models]
    for step in range(steps):
        expected_loss = train_step(ours, *batch, optimizers[1], grad_clip)
        loss = call(function(learner, "training_step"), theirs, *batch, optimizers[0], grad_clip)
        expect_number(loss, expected_loss, f"the loss returned by step {step + 1} ({case})", tol=1e-5)
        scale = theirs.logit_scale.item()
        if scale > MAX_LOGIT_SCALE + 1e-6:
            raise Wrong(f"after step {step + 1}, logit_scale is {scale:.4f} > ln(100) = {MAX_LOGIT_SCALE:.4f}: the "
                        "temperature was not clamped",
                        "after optimizer.step(), under torch.no_grad(): model.logit_scale.clamp_(max=math.log(100))")
        for (name, got), want in zip(theirs.named_parameters(), ours.parameters()):
            expect_close(got.detach(), want.detach(), f"parameter {name} after step {step + 1} ({case})",
                         rtol=1e-4, atol=1e-5)


STEP_HINT = ("encode both sides with normalize=True; loss = clip_loss(image_features, text_features, "
             "model.logit_scale.exp()); optimizer.zero_grad(); loss.backward(); clip the gradient norm with "
             "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip); optimizer.step(); clamp logit_scale; "
             "return loss.item()")


@EXERCISE.check(STEP_HINT)
def step_matches_minclip(learner):
    """one training_step (SGD with momentum, gradient norm clipped at 0.05) leaves every parameter as minclip's loop"""
    _expect_steps(learner, seed=2, steps=1, grad_clip=0.05, logit_scale=None, case="one step")


@EXERCISE.check("after optimizer.step(), clamp the temperature in place without recording it for autograd: "
                "with torch.no_grad(): model.logit_scale.clamp_(max=math.log(100))")
def step_clamps_the_temperature(learner):
    """a step that starts with logit_scale above ln(100) ends with it at ln(100), as CLIP clamps it"""
    _expect_steps(learner, seed=3, steps=1, grad_clip=1.0, logit_scale=math.log(100) + 0.5, case="scale above the cap")


@EXERCISE.check("gradients accumulate in .grad until they are zeroed: call optimizer.zero_grad() before "
                "loss.backward() in every step")
def three_steps_in_a_row(learner):
    """three steps in a row equal minclip's (each step starts from zeroed gradients)"""
    _expect_steps(learner, seed=4, steps=3, grad_clip=1.0, logit_scale=None, case="three steps")
