"""Grading a file in a child process: whatever the learner's file does, the grader survives it and says what happened.

A learner's file can do more than compute wrong answers: loop forever at its top level, call ``sys.exit(0)`` or
``os._exit(0)``, crash the interpreter in native code, or print a report of its own. Run in the grader's process, the
first hangs the grader, the next two end it (with a success status, for ``os._exit(0)``), the last confuses a reader.
So :func:`grade_file` runs each file in a child process and believes only what the child reports over a private
channel:

- the child is forked from a fresh interpreter that imported the checks once (multiprocessing's ``forkserver``
  method), so it starts in milliseconds and nothing it does reaches the grader or the next file;
- it loads the file under the time limit, runs the checks (each under the limit, see :func:`.base.grade`) and writes
  each step as one JSON line into a file the parent created, every line carrying a random nonce that the parent
  handed to it privately (not on the command line, not in the environment);
- the parent waits at most for loading plus every check plus a start-up margin, then kills the child, and accepts
  the grade only from well-formed lines with the nonce, ending with a "done" line and exit status 0. A child that
  ends any other way fails the checks it had not finished, with a message that says how it ended;
- what the file printed is captured and shown apart, labelled as the file's output.

A learner's code runs inside the child, so it could still dig the nonce out of the child's memory: this stops
accidents and easy tricks, not a determined forger. An instructor grading adversaries should still read the files.
"""

import json
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .base import Exercise, LoadError, Result, grade, load_file

STARTUP_S = 30  # margin for the child to start and import minclip on a busy machine
OUTPUT_LINES = 20  # at most this many lines of what the learner's file printed are shown


@dataclass
class FileReport:
    """What grading one file found. ``results`` holds one :class:`Result` per check unless the file did not load."""

    load_error: str | None = None  # the file could not be graded: missing, does not run, hangs or kills its process
    notes: list[str] = field(default_factory=list)  # remarks on the file, e.g. a function imported from minclip
    results: list[Result] = field(default_factory=list)
    output: str = ""  # what the learner's file printed (stdout and stderr), shown apart from the report


def grade_file(exercise: Exercise, path: Path, time_limit_s: float) -> FileReport:
    """Grade the file at ``path`` for ``exercise`` (one of ``EXERCISES``) in a child process; see the module doc."""
    path = Path(path)
    if not path.is_file():
        return FileReport(load_error=f"no file at {path}")
    nonce = secrets.token_hex(16)
    deadline = STARTUP_S + time_limit_s * (1 + len(exercise.checks))
    with tempfile.TemporaryDirectory(prefix="course-grading-") as folder:
        channel, output = Path(folder) / "results.jsonl", Path(folder) / "output.txt"
        child = _context().Process(target=_child, name=f"grading {exercise.name}",
                                   args=(exercise.name, str(path.resolve()), time_limit_s, nonce, str(channel),
                                         str(output)))
        child.start()
        try:
            child.join(deadline)
        finally:
            hung = child.is_alive()
            if hung:
                child.kill()
                child.join()
        events = _read_events(channel, nonce)
        printed = output.read_text(encoding="utf-8", errors="replace") if output.is_file() else ""
    ending = _how_it_ended(child.exitcode, hung, deadline)
    return _report(exercise, events, ending, printed)


# ----------------------------------------------------------------------------------------------------------------------
# The parent: reading the child's report


def _context():
    """Forkserver where the platform has it (POSIX): a fresh interpreter, preloaded once; else a fresh one per file."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["course.checks"])  # torch and minclip imported once, not once per file
        return context
    return multiprocessing.get_context("spawn")


class _Forged(Exception):
    pass


def _read_events(channel: Path, nonce: str) -> list[dict] | None:
    """The child's events in order; None when the channel holds a line that the child's reporter did not write."""
    if not channel.is_file():
        return []
    events = []
    try:
        for line in channel.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if not isinstance(event, dict) or event.pop("nonce", None) != nonce or "event" not in event:
                raise _Forged
            events.append(event)
    except (ValueError, _Forged):  # ValueError: not JSON, or not UTF-8
        return None
    return events


def _how_it_ended(exitcode: int | None, hung: bool, deadline: float) -> str | None:
    """None for a normal end (exit status 0), else a phrase: "was stopped after 120 s", "crashed (signal SIGSEGV)"."""
    if hung:
        return f"gave no answer within {deadline:g} s and was stopped (an endless loop that ignores the time limit?)"
    if exitcode == 0:
        return None
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crashed ({name}: an error in native code, e.g. a tensor operation on invalid memory)"
    return f"ended with exit status {exitcode} (does your code call sys.exit or os._exit?)"


def _report(exercise: Exercise, events: list[dict] | None, ending: str | None, printed: str) -> FileReport:
    """Turn the child's events and the way it ended into the report; only a complete, clean run passes checks."""
    done = events is not None and any(event["event"] == "done" for event in events)
    if ending is None and not done:
        ending = "ended with exit status 0 before reporting (does your code call os._exit or sys.exit?)"
    if events is None:
        return FileReport(load_error="the grader's result channel holds lines it did not write: does your file write "
                                     "into files it did not open?", output=printed)
    loaded = next((event for event in events if event["event"] == "loaded"), None)
    if loaded is None:
        return FileReport(load_error=f"the process running your file {ending} while loading it", output=printed)
    if loaded.get("error"):
        return FileReport(load_error=str(loaded["error"]), output=printed)
    results = {}
    for event in events:
        if event["event"] == "result" and isinstance(event.get("index"), int) \
                and 0 <= event["index"] < len(exercise.checks):
            check = exercise.checks[event["index"]]
            results[event["index"]] = Result(check, bool(event.get("passed")), str(event.get("message", "")),
                                             str(event.get("hint", "")), bool(event.get("not_implemented")),
                                             bool(event.get("timed_out")))
    finished = done and ending is None
    report = FileReport(notes=[str(note) for note in loaded.get("notes", [])], output=printed)
    for index, check in enumerate(exercise.checks):
        if index in results and finished:
            report.results.append(results[index])
        elif index in results:  # reported, but the process then ended badly: nothing of it is trusted
            report.results.append(Result(check, False, f"the process grading your file {ending} after this check; "
                                                       "no result of it counts", ""))
        elif index == len(results):
            report.results.append(Result(check, False, f"the process grading your file {ending} during this check",
                                         check.hint))
        else:
            report.results.append(Result(check, False, "not run: the process grading your file had ended", ""))
    return report


# ----------------------------------------------------------------------------------------------------------------------
# The child


def _child(name: str, path: str, time_limit_s: float, nonce: str, channel: str, output: str) -> None:
    """Load and grade one file, writing each step to ``channel`` as a JSON line that carries ``nonce``."""
    from . import EXERCISES

    exercise = EXERCISES[name]
    report = _Reporter(channel, nonce)
    _capture_output(output)
    try:
        learner = load_file(path, f"course_learner_{name}", time_limit_s)
    except LoadError as error:
        report("loaded", error=str(error))
        return
    report("loaded", notes=_notes(exercise, learner))
    grade(exercise, learner, time_limit_s, on_result=lambda result: report(
        "result", index=exercise.checks.index(result.check), passed=result.passed, message=result.message,
        hint=result.hint, not_implemented=result.not_implemented, timed_out=result.timed_out))
    report("done")
    sys.stdout.flush()
    sys.stderr.flush()


class _Reporter:
    """Writes the child's events to the channel, one flushed JSON line each (a crash keeps every line written)."""

    def __init__(self, channel: str, nonce: str):
        self._file = open(channel, "a", encoding="utf-8")  # noqa: SIM115 - open for the child's whole life
        self._nonce = nonce

    def __call__(self, event: str, **fields) -> None:
        self._file.write(json.dumps({"nonce": self._nonce, "event": event, **fields}) + "\n")
        self._file.flush()


def _capture_output(output: str) -> None:
    """Send everything the child prints (file descriptors 1 and 2, so native code's output too) to ``output``."""
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)  # lines reach the file even if the process dies


def _notes(exercise: Exercise, learner) -> list[str]:
    """A note for each function the learner imported from minclip instead of writing it."""
    notes = []
    for name in exercise.functions:
        origin = getattr(getattr(learner, name, None), "__module__", None) or ""
        if origin.split(".")[0] == "minclip":
            notes.append(f"`{name}` is imported from {origin}, so this grades minclip's code, not yours")
    return notes
