"""The course's grader: ``python -m course list`` and ``python -m course check NAME [--file PATH]``.

    python -m course list                              the exercises, their lessons and the functions to write
    python -m course check attention                   grade course/exercises/attention.py
    python -m course check attention --file my.py      grade another file
    python -m course check all --dir submissions/ana   grade every exercise in a folder (an instructor's loop)

Exit status: 0 when every check passed, 1 when a check failed (or a file is missing, does not run, hangs, or ends
the process that grades it), 2 for a wrong command line. Each file is graded in a child process (see
course/checks/isolate.py), so nothing a file does can stop the grader or fake its verdict. See course/README.md.
"""

import argparse
import math
import sys
import textwrap
from pathlib import Path

from .checks import CHECK_TIME_LIMIT_S, EXERCISES
from .checks.base import Exercise, Result
from .checks.isolate import OUTPUT_LINES, grade_file

MAX_TIME_LIMIT_S = 600  # a check's inputs are tiny: more than ten minutes is a typo

EXERCISES_DIR = Path(__file__).resolve().parent / "exercises"
WIDTH = 110


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course", description="Grade the minclip course's exercises.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,check}")
    commands.add_parser("list", help="list the exercises")
    check = commands.add_parser("check", help="grade exercises", description="Grade exercises against minclip.")
    check.add_argument("names", nargs="+", metavar="NAME", help="exercise names (see `list`), or `all`")
    check.add_argument("--file", type=Path, help="the file to grade (default: course/exercises/NAME.py); one NAME only")
    check.add_argument("--dir", type=Path, help="grade NAME.py files in this folder instead of course/exercises/")
    check.add_argument("--time-limit", type=float, default=CHECK_TIME_LIMIT_S, metavar="SECONDS",
                       help=f"time allowed per check (default {CHECK_TIME_LIMIT_S})")
    args = parser.parse_args(argv)

    if args.command == "list":
        print_list()
        return 0

    names = list(EXERCISES) if "all" in args.names else list(dict.fromkeys(args.names))  # in order, once each
    unknown = [name for name in names if name not in EXERCISES]
    if unknown:
        parser.error(f"unknown exercise {', '.join(map(repr, unknown))}; choose from {', '.join(EXERCISES)} or all")
    if args.file is not None and (len(names) != 1 or args.dir is not None):
        parser.error("--file grades one file: give exactly one exercise NAME and no --dir")
    if not (math.isfinite(args.time_limit) and 0 < args.time_limit <= MAX_TIME_LIMIT_S):
        parser.error(f"--time-limit must be a number of seconds in (0, {MAX_TIME_LIMIT_S}], got {args.time_limit:g}")
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a folder")

    totals = []
    for name in names:
        path = args.file if args.file is not None else (args.dir or EXERCISES_DIR) / f"{name}.py"
        totals.append((name, check_one(EXERCISES[name], path, args.time_limit)))
    if len(totals) > 1:
        print("summary")
        for name, (passed, total) in totals:
            print(f"  {name:<14} {passed:>2}/{total:<2} {'PASS' if passed == total else 'FAIL'}")
    return 0 if all(passed == total for _, (passed, total) in totals) else 1


def print_list() -> None:
    print(f"{'exercise':<14}{'lesson (notebooks/)':<30}{'reference':<24}functions you write")
    for exercise in EXERCISES.values():
        print(f"{exercise.name:<14}{exercise.lesson:<30}{exercise.reference:<24}{', '.join(exercise.functions)}")
    print("\ngrade one with: python -m course check NAME   (your code goes in course/exercises/NAME.py)")


def check_one(exercise: Exercise, path: Path, time_limit: float) -> tuple[int, int]:
    """Grade the file at ``path``, print the report, return ``(checks passed, checks)``."""
    print(f"{exercise.name}: {exercise.title}")
    print(f"  grading {_shown(path)}   (lesson notebooks/{exercise.lesson}.ipynb, reference {exercise.reference})")
    total = len(exercise.checks)
    report = grade_file(exercise, path, time_limit)
    _print_output(report.output)
    if report.load_error is not None:
        _print_wrapped(f"FAIL  {report.load_error}", "  ", "        ")
        print(f"{exercise.name}: 0 of {total} checks passed (the file could not be graded)\n")
        return 0, total
    for note in report.notes:
        print(f"  note: {note}")
    print()
    results = report.results
    for result in results:
        _print_result(result)
    passed = sum(result.passed for result in results)
    if any(result.not_implemented for result in results):
        _print_wrapped("(to implement a function, write your code between its TODO and END OF YOUR CODE banners and "
                       "delete its `raise NotImplementedError` line)", "  ", "   ")
    print(f"{exercise.name}: {passed} of {total} checks passed"
          + ("" if passed == total else "; fix the first failure first, later checks often build on it") + "\n")
    return passed, total


def _print_result(result: Result) -> None:
    check = result.check
    _print_wrapped(f"{'PASS' if result.passed else 'FAIL'}  {check.name}: {check.description}", "  ", "        ")
    if not result.passed:
        _print_wrapped(result.message, "        ", "          ")
        if result.hint:
            _print_wrapped(f"hint: {result.hint}", "        ", "              ")


def _print_output(output: str) -> None:
    """What the learner's file printed, shown apart: indented behind `|`, never mistaken for the grader's verdicts."""
    lines = output.rstrip().splitlines()
    if not lines:
        return
    print("  your file printed (its output, not the grader's):")
    for line in lines[:OUTPUT_LINES]:
        print(f"  | {line}")
    if len(lines) > OUTPUT_LINES:
        print(f"  | ... and {len(lines) - OUTPUT_LINES} more lines")


def _print_wrapped(text: str, first: str, rest: str) -> None:
    print(textwrap.fill(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                        break_on_hyphens=False))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (no absolute paths in logs to share)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
