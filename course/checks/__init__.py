"""Every exercise of the course and its checks, in teaching order; :mod:`.base` holds the machinery that runs them,
:mod:`.isolate` runs it on a learner's file in a child process.

Each module here grades one file of ``course/exercises/`` against the minclip module that holds the reference
implementation, and defines ``EXERCISE``.
"""

from . import (attention, bpe, guidance, infonce, negclip, patchify, recall, robustness, text_pooling, training,
               zero_shot)
from .base import CHECK_TIME_LIMIT_S, Check, Exercise, LoadError, Result, Wrong, grade, load_file

EXERCISES: dict[str, Exercise] = {module.EXERCISE.name: module.EXERCISE for module in (
    attention, bpe, text_pooling, patchify, infonce, training, zero_shot, recall, negclip, guidance, robustness
)}

__all__ = ["CHECK_TIME_LIMIT_S", "EXERCISES", "Check", "Exercise", "LoadError", "Result", "Wrong", "grade", "load_file"]
