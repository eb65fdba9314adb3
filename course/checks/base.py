"""The grader's machinery: exercises, their checks, loading a learner's file and running the checks on it.

An :class:`Exercise` names the functions a learner writes and holds a list of :class:`Check`\\ s. A check is a plain
function that receives the learner's module, calls the learner's functions on fixed random inputs, and compares the
answers with minclip's own implementation (the reference). It signals a wrong answer by raising :class:`Wrong`, with
a message that says what differs and, where the mistake is a common one, a hint that names it.

:func:`grade` runs every check of an exercise and never lets the learner's code crash the grader: each check runs on
its own, under a time limit, and whatever the learner's code raises becomes that check's failure, reported as the
traceback's last line and the line of the learner's file where it happened.
"""

import contextlib
import inspect
import math
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

CHECK_TIME_LIMIT_S = 10  # per check; the inputs are tiny, so even slow loops finish in well under a second
AFTER_TIMEOUT_S = 2  # once a check has timed out, later ones get this long: the same endless loop is likely there


class Wrong(AssertionError):
    """A check's verdict that the learner's answer is wrong; ``hint`` (optional) replaces the check's own hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class _TimeLimit(BaseException):  # BaseException: a learner's `except Exception` must not swallow it
    pass


@dataclass
class Check:
    name: str  # short id shown in the report, e.g. "sdpa_causal_mask"
    description: str  # one line: what the check establishes
    hint: str  # what to look at when it fails
    run: Callable[[ModuleType], None]  # raises Wrong (wrong answer) or anything else (the learner's code crashed)


@dataclass
class Exercise:
    name: str  # the CLI name and the stub's file name: course/exercises/<name>.py
    title: str  # one line
    lesson: str  # the notebook that teaches it, e.g. "01_attention"
    reference: str  # the minclip file holding the reference implementation
    functions: tuple[str, ...]  # the functions the learner writes, in the order the stub presents them
    checks: list[Check] = field(default_factory=list)

    def check(self, hint: str):
        """Decorator: register ``function(learner_module)`` as a check; its docstring's first line describes it."""

        def register(function):
            description = (function.__doc__ or function.__name__).strip().splitlines()[0]
            self.checks.append(Check(function.__name__, description, hint, function))
            return function

        return register


@dataclass
class Result:
    check: Check
    passed: bool
    message: str = ""  # why it failed ("" when it passed)
    hint: str = ""  # the hint to show when it failed ("" for none)
    not_implemented: bool = False  # it failed because the learner's function is still the stub
    timed_out: bool = False  # it failed because the learner's code ran past the time limit


# ----------------------------------------------------------------------------------------------------------------------
# Loading the learner's file


class LoadError(Exception):
    """The learner's file is missing or does not run (syntax error, failing import, error at top level)."""


def load_file(path, module_name: str, time_limit_s: float | None = None) -> ModuleType:
    """Execute the Python file at ``path`` as a fresh module, within ``time_limit_s`` seconds if given.

    The source is read and compiled here, not imported: no bytecode is read from or written to ``__pycache__``, so a
    file edited a moment ago is always graded as it is now, and a folder of submissions stays as handed in. Anything
    the file's top level raises, ``SystemExit`` included, and running past the time limit become a :class:`LoadError`.
    """
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"no file at {path}")
    module = ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules[module_name] = module  # some constructs (dataclasses, pickling) look the module up by name
    try:
        with _time_limit(time_limit_s or 0):
            exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    except _TimeLimit as error:
        where = _learner_frame(error, path)
        inside = f" (it was running line {where.lineno})" if where is not None else ""
        raise LoadError(f"your file did not finish running within {time_limit_s:g} s{inside}: is there a loop that "
                        "never ends at its top level? Put code you try out under `if __name__ == \"__main__\":`") \
            from None
    except BaseException as error:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit... all become a report
        if isinstance(error, KeyboardInterrupt):
            raise
        raise LoadError(f"could not run your file: {_describe_error(error, path)}") from error
    finally:
        sys.modules.pop(module_name, None)
    return module


# ----------------------------------------------------------------------------------------------------------------------
# Running the checks


def grade(exercise: Exercise, learner: ModuleType, time_limit_s: float = CHECK_TIME_LIMIT_S,
          on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run every check of ``exercise`` on the module ``learner``; one :class:`Result` per check, in order.

    ``on_result`` (optional) receives each result as soon as its check ends (the child process of :mod:`.isolate`
    reports them one by one, so a crash in a later check loses none of the earlier ones)."""
    learner_file = getattr(learner, "__file__", None)
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the inputs are tiny: extra threads only spin, and slow to a crawl on a busy machine
    try:
        for check in exercise.checks:
            results.append(_run(check, learner, learner_file, time_limit_s))
            if on_result is not None:
                on_result(results[-1])
            if results[-1].timed_out:
                time_limit_s = min(time_limit_s, AFTER_TIMEOUT_S)
    finally:
        torch.set_num_threads(threads)
    return results


def _run(check: Check, learner: ModuleType, learner_file, time_limit_s: float) -> Result:
    """One check on the learner's module; whatever the learner's code does becomes the result."""
    try:
        with _time_limit(time_limit_s), torch.random.fork_rng():  # the learner's seeds stay the learner's
            check.run(learner)
    except Wrong as verdict:
        return Result(check, False, str(verdict), verdict.hint or check.hint)
    except _TimeLimit as error:
        where = _learner_frame(error, learner_file)
        inside = f" (it was running line {where.lineno} of {where.name})" if where is not None else ""
        message = f"gave no answer within {time_limit_s:g} s{inside}: is there a loop that never ends?"
        return Result(check, False, message, check.hint, timed_out=True)
    except KeyboardInterrupt:
        raise
    except NotImplementedError as error:
        where = _learner_frame(error, learner_file)
        name = f"`{where.name}`" if where is not None else "a function"
        return Result(check, False, f"not implemented yet: {name} still raises NotImplementedError", "",
                      not_implemented=True)
    except MissingFunction as error:
        return Result(check, False, str(error), "keep the function names and signatures of the stub")
    except BaseException as error:  # noqa: BLE001 - whatever the learner's code raises is reported, not fatal
        return Result(check, False, f"your code raised {_describe_error(error, learner_file)}", check.hint)
    return Result(check, True)


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds`` (POSIX main thread only; elsewhere the block runs unlimited)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or not seconds:
        yield
        return

    def interrupt(signum, frame):
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _learner_frame(error: BaseException, learner_file) -> traceback.FrameSummary | None:
    """The innermost frame of ``error``'s traceback that lies in the learner's file (None if none does)."""
    if learner_file is None:
        return None
    target = Path(learner_file).resolve()
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if _same_file(frame.filename, target)]
    return frames[-1] if frames else None


def _same_file(filename: str, target: Path) -> bool:
    try:
        return Path(filename).resolve() == target
    except (OSError, ValueError):
        return False


def _describe_error(error: BaseException, learner_file) -> str:
    """``"ValueError: message (attention.py line 42, in split_heads: `x.view(...)`)"``: the traceback's last line,
    and where in the learner's file it started."""
    last_line = traceback.format_exception_only(type(error), error)[-1].strip()
    if isinstance(error, SyntaxError) and error.lineno is not None:
        return f"{last_line} (line {error.lineno})"
    where = _learner_frame(error, learner_file)
    if where is None:
        return last_line
    code = f": `{where.line.strip()}`" if where.line else ""
    return f"{last_line} ({Path(where.filename).name} line {where.lineno}, in {where.name}{code})"


# ----------------------------------------------------------------------------------------------------------------------
# Helpers for writing checks


class MissingFunction(Exception):
    pass


def function(learner: ModuleType, name: str) -> Callable:
    """The learner's function ``name``, or a clear failure if the file does not define it."""
    value = getattr(learner, name, None)
    if value is None:
        raise MissingFunction(f"your file defines no function named `{name}`")
    if not callable(value):
        raise MissingFunction(f"`{name}` in your file is a {type(value).__name__}, not a function")
    return value


def call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing if it changed any tensor, list or dict it was given, in place."""
    before = [_snapshot(value) for value in (*args, *kwargs.values())]
    out = fn(*args, **kwargs)
    names = _argument_names(fn, len(args), kwargs)
    for name, value, snapshot in zip(names, (*args, *kwargs.values()), before):
        if snapshot is not None and not _unchanged(value, snapshot):
            raise Wrong(
                f"`{getattr(fn, '__name__', 'your function')}` changed its input {name} in place",
                "never modify your inputs: compute new tensors (`x = x + 1`, not `x += 1`); the caller still needs "
                "them, and autograd fails on tensors overwritten in place",
            )
    return out


def _argument_names(fn: Callable, positional: int, kwargs: dict) -> list[str]:
    """Names for the arguments of a call, from ``fn``'s signature where it has one: ```q```, ```mask```..."""
    try:
        parameters = [p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = []
    names = [f"`{parameters[i]}`" if i < len(parameters) else f"number {i + 1}" for i in range(positional)]
    return names + [f"`{key}`" for key in kwargs]


def _snapshot(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_snapshot(item) if isinstance(item, (torch.Tensor, list)) else item for item in value]
    if isinstance(value, dict):
        return dict(value)
    return None


def _unchanged(value, snapshot) -> bool:
    if isinstance(value, torch.Tensor):
        return value.shape == snapshot.shape and torch.equal(value.detach(), snapshot)
    if isinstance(value, list):
        return len(value) == len(snapshot) and all(
            _unchanged(a, b) if isinstance(a, (torch.Tensor, list)) else a == b for a, b in zip(value, snapshot)
        )
    return value == snapshot


def expect_close(actual, expected: torch.Tensor, what: str, rtol: float | None = None, atol: float | None = None,
                 hint: str | None = None) -> None:
    """Fail unless ``actual`` is a tensor of ``expected``'s shape and dtype whose values are close to it.

    Tolerances default to 1e-5 (float32) or 1e-10 (float64): tight enough to catch every real mistake, loose enough
    for a correct answer computed in another order.
    """
    if actual is None:
        raise Wrong(f"{what} is None: did you forget to `return` it?", hint)
    if not isinstance(actual, torch.Tensor):
        raise Wrong(f"{what} should be a torch.Tensor, got {type(actual).__name__}", hint)
    if tuple(actual.shape) != tuple(expected.shape):
        raise Wrong(f"{what} has shape {tuple(actual.shape)} but should have shape {tuple(expected.shape)}", hint)
    if actual.dtype != expected.dtype:
        raise Wrong(f"{what} has dtype {actual.dtype} but should have dtype {expected.dtype} (keep the inputs' dtype)",
                    hint)
    if expected.dtype == torch.bool or not expected.is_floating_point():
        if not torch.equal(actual.cpu(), expected.cpu()):
            mismatch = (actual.cpu() != expected.cpu()).nonzero()[0].tolist()
            raise Wrong(f"{what} differs from minclip's: at index {tuple(mismatch)} you have "
                        f"{actual[tuple(mismatch)].item()}, expected {expected[tuple(mismatch)].item()}", hint)
        return
    tight = expected.dtype == torch.float64
    rtol = rtol if rtol is not None else (1e-10 if tight else 1e-5)
    atol = atol if atol is not None else (1e-10 if tight else 1e-5)
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        where = tuple(torch.isnan(actual).nonzero()[0].tolist())
        raise Wrong(f"{what} contains NaN (first at index {where}) where minclip's has none", hint)
    close = torch.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        where = tuple((~close).nonzero()[0].tolist())
        share = (~close).float().mean().item()
        raise Wrong(f"{what} differs from minclip's in {share:.0%} of its entries; e.g. at index {where} you have "
                    f"{actual[where].item():.6g}, expected {expected[where].item():.6g}", hint)


def expect_number(actual, expected: float, what: str, tol: float = 1e-6, hint: str | None = None) -> None:
    """Fail unless ``actual`` is a number (a Python number or a one-element tensor) within ``tol`` of ``expected``."""
    if actual is None:
        raise Wrong(f"{what} is None: did you forget to `return` it?", hint)
    if isinstance(actual, torch.Tensor):
        if actual.numel() != 1:
            raise Wrong(f"{what} should be one number, got a tensor of shape {tuple(actual.shape)}", hint)
        actual = actual.item()
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        raise Wrong(f"{what} should be a number, got {type(actual).__name__}", hint)
    if not math.isclose(actual, expected, rel_tol=tol, abs_tol=tol):
        raise Wrong(f"{what} is {actual:.6g}, expected {expected:.6g}", hint)


def expect_gradients_flow(tensors: dict, what: str) -> None:
    """Fail with a clear message when an input that needs a gradient did not get one (the graph was cut)."""
    for name, tensor in tensors.items():
        if tensor.grad is None:
            raise Wrong(f"no gradient reached {name} through {what}: the computation graph was cut",
                        "use only differentiable torch operations on the inputs: no .detach(), .item(), .numpy(), "
                        "torch.tensor(...) around results, or Python loops that rebuild tensors from numbers")


def generator(seed: int = 0) -> torch.Generator:
    """A private random generator, so that a check's inputs never depend on the learner's use of the global one."""
    return torch.Generator().manual_seed(seed)


def nano_clip_batch(seed: int, images: int, texts: int):
    """A random ``nano`` CLIP (minclip.model) with random images ``(images, 3, S, S)`` and token rows ``(texts, T)``
    of different lengths, each ``[sot, ids..., eot, 0, ...]``. Call it inside a check (the grader's ``fork_rng``
    keeps the learner's global seed untouched)."""
    from minclip.model import CLIP, CLIPConfig  # here, so that checks which need no model do not import it

    torch.manual_seed(seed)
    config = CLIPConfig.preset("nano")
    model = CLIP(config)
    g = generator(seed)
    pixels = torch.randn(images, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.zeros(texts, config.context_length, dtype=torch.long)
    for row in range(texts):
        length = 1 + row
        tokens[row, 0] = config.sot_token_id
        tokens[row, 1 : 1 + length] = torch.randint(1, config.sot_token_id, (length,), generator=g)
        tokens[row, 1 + length] = config.eot_token_id
    return model, pixels, tokens
