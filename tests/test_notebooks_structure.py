"""The course's notebooks lead to its graded exercises: each lesson ends with a "Your turn" cell that names the stub
file, the functions to write and the grader command of every exercise whose lesson it is (``course.checks.EXERCISES``),
so the notebooks, ``course/README.md`` and ``python -m course list`` cannot drift apart.

Reads the notebooks' JSON only (nothing is executed), so it runs in well under a second.
"""

import json
import re
from pathlib import Path

import pytest

from course.checks import EXERCISES

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
YOUR_TURN = re.compile(r"^#+\s*Your turn\b", re.MULTILINE)


def markdown_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]


def your_turn_text(path: Path) -> str:
    """The text of the notebook's "Your turn" cells ("" when it has none)."""
    return "\n".join(cell for cell in markdown_cells(path) if YOUR_TURN.search(cell))


def test_the_notebooks_are_found():
    assert len(LESSONS) >= 13, [path.name for path in LESSONS]


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_exercise_is_named_in_its_lessons_your_turn_cell(name):
    exercise = EXERCISES[name]
    notebook = NOTEBOOKS / f"{exercise.lesson}.ipynb"
    assert notebook.exists(), f"exercise {name!r} names lesson {exercise.lesson!r}, but {notebook.name} does not exist"
    text = your_turn_text(notebook)
    assert text, f"{notebook.name} teaches exercise {name!r} but has no markdown cell headed '## Your turn'"
    missing = [piece for piece in (f"course/exercises/{name}.py", f"python -m course check {name}",
                                   *(f"`{function}`" for function in exercise.functions)) if piece not in text]
    assert not missing, f"{notebook.name}'s 'Your turn' cell does not name {missing} of exercise {name!r}"


@pytest.mark.parametrize("notebook", LESSONS, ids=[path.stem for path in LESSONS])
def test_your_turn_is_the_last_cell_and_comes_once(notebook):
    cells = markdown_cells(notebook)
    headed = [i for i, cell in enumerate(cells) if YOUR_TURN.search(cell)]
    if not headed:
        assert not any(exercise.lesson == notebook.stem for exercise in EXERCISES.values())
        return
    assert headed == [len(cells) - 1], f"{notebook.name}: one 'Your turn' cell, the last markdown cell (found {headed})"
    last_cell = json.loads(notebook.read_text(encoding="utf-8"))["cells"][-1]
    assert last_cell["cell_type"] == "markdown", f"{notebook.name} ends with a code cell after 'Your turn'"


@pytest.mark.parametrize("notebook", LESSONS, ids=[path.stem for path in LESSONS])
def test_every_exercise_a_notebook_mentions_exists(notebook):
    text = "\n".join(markdown_cells(notebook))
    named = set(re.findall(r"course/exercises/([a-z_]+)\.py", text))
    named |= set(re.findall(r"python -m course check ([a-z_]+)", text)) - {"all"}
    unknown = sorted(named - set(EXERCISES))
    assert not unknown, f"{notebook.name} names exercises the course does not have: {unknown} (see python -m course list)"
